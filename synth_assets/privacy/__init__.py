"""Privacy: the accounting of Gaussian mechanisms, the budget ledger, and the one procedure by which a
partition's DP releases are planned, refused or charged together, and run."""
