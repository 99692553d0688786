"""The notification pipeline: route ▶ group ▶ inhibit ▶ time windows ▶ silence ▶ dedup ▶ retry ▶ notify."""
