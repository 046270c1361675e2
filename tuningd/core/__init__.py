"""The pure core: job values, errors, the state machine, limits, scheduling, verdicts."""
