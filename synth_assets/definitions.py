"""The Dagster definitions: the asset graph of one dataset, with its resources.

The dataset is the directory named by SYNTH_ASSETS_DATASET, or the embedded Baseball Databank.
"""

from synth_assets.defs.graph import build_definitions

defs = build_definitions()
