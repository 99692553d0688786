"""What we know about each pipeline: bounded run history, source health, cursors."""
