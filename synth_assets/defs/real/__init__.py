"""The real-data half: sources, reporting tables, the wide table and the ground-truth answers."""
