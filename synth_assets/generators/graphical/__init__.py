"""Differentially private graphical-model generators on the wide table's public bins: MST (McKenna,
Miklau & Sheldon 2021) and AIM (McKenna et al. 2022), fitted and sampled with private-pgm (mbi 2.x).

Both measure marginals with Gaussian noise and choose which ones with the exponential mechanism, so their
plans hold selections too: their releases compose in zCDP (:mod:`synth_assets.privacy.accounting`).
"""

import jax

# mbi's estimators stall in float32 on counts of tens of thousands: JAX runs in float64, set before mbi is
# imported by any module of this package; and without the persistent compilation cache, which mbi's many
# small compiled programs only fill (both process-wide JAX settings; nothing else here uses JAX).
jax.config.update("jax_enable_x64", True)
jax.config.update("jax_enable_compilation_cache", False)

from synth_assets.generators.graphical.aim import AIM, AIMSettings  # noqa: E402
from synth_assets.generators.graphical.mst import MST, MSTSettings  # noqa: E402

__all__ = ["AIM", "AIMSettings", "MST", "MSTSettings"]
