"""Deterministic replay: rules and the notification pipeline on a simulated clock.

Used by `sentinel test` (expected notifications) and `sentinel backtest`. The notification side reuses the
daemon's own pieces rather than re-deriving them: `Route` picks receivers, the real `Dispatcher` keeps the
aggregation groups (`put` and its per-group flush), `build_pipelines` builds the stage chain (muting stages
via its `before` hook, dedup against a `NotificationLog`, retry, set-notifies), and only the edge differs —
a `RecordingIntegration` that writes down what would have been sent. The one thing not reused is the
dispatcher's asyncio timer loop: `ReplayNotifier` steps the groups' `next_flush` instants itself on a
`FrozenClock`, so a replay is exact and instant instead of racing real time.
"""
