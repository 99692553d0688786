"""What pipelines cost: rates from `cost.rates` in sentinel.yaml applied to the task durations adapters read."""
