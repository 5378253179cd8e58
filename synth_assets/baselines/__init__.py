"""Reference generators that any DP method must beat, scored the same way as PE."""
