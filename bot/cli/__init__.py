"""`gatehouse`, the console script: one module per command group, the shared plumbing in `session`."""
