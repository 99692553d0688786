"""The HTTP face: /metrics, health, the API and a status page."""
