"""Generators of synthetic wide tables, behind one interface (:mod:`synth_assets.generators.base`):
Private Evolution (:mod:`.private_evolution`) and the independent-marginals reference
(:mod:`.independent`)."""
