"""The scaling policy of the work pools, the arrivals forecast and the fleet's figures: pure,
no I/O (the autoscaler service applies them)."""
