"""`sentinel backtest`: replay real scheduler history through the rules and the notification pipeline.

fetch (adapters, politely) ▶ sentinel.replay (simulated clock) ▶ report (per rule, receiver, day, week).
"""
