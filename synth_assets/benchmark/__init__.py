"""The analyst workload: run it on any reporting tables, and score one set of answers against another."""
