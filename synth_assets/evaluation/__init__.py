"""Measuring synthetic data against real data: marginal fidelity (and, later, ML utility and privacy risk)."""
