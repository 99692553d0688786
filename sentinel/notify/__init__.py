"""Delivery: integrations only send and say whether a failure is worth retrying."""
