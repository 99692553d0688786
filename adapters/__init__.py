"""Scheduler adapters: each turns one scheduler's REST API into `sentinel.model` facts."""
