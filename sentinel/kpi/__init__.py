"""Key performance indicators: pipeline reliability, SLA compliance and on-call health, as Prometheus series
that survive restarts (their state lives in the store's kv table)."""
