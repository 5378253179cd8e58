"""The synthetic half: Private Evolution runs partitioned by epsilon, the reference, and the scores."""
