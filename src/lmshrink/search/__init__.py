"""The budget-driven search of `lmshrink shrink`: candidates, their latency measured before
training, training only what can win, and the choice."""
