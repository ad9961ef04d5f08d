"""Release tooling: the hosts' hash-locked requirements."""
