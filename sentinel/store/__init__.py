"""Durable state: cursors, run history, rule states, the notification log. SQLite by default."""

from sentinel.store.sqlite import Store

__all__ = ["Store"]
