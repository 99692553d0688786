"""The one error a receiver's notification settings raise when they cannot be used."""

from __future__ import annotations


class NotifyConfigError(ValueError):
    """A receiver's notification settings cannot be used. The message never contains a secret.

    A ValueError, so raised inside a pydantic validator it becomes a validation error at the field.
    """
