"""Rule files, conditions and the alert lifecycle (inactive → pending → firing → resolved)."""
