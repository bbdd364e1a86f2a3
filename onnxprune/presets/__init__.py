"""Seed methods as named presets (``onnxprune presets``, ``--preset NAME``, ``preset:`` in recipes).

Each family module registers its presets in :data:`PRESETS` when imported below.
"""

from onnxprune.presets import (
    allocators,  # noqa: F401  (registers pca-width, sipp, sipp-random, sipp-hybrid, kfac-neuron, pqi)
    classic,  # noqa: F401 - registers the presets of the methods that already work
    dst,  # noqa: F401 - registers rigl, set, gap, scl
    ensembles,  # noqa: F401  (registers its presets)
    schedules,  # noqa: F401 - registers platon, campfire, early-bird
    scorers,  # noqa: F401  (i-SpaSP, NNrelief, SNIP, GraSP, DRIVE)
)
from onnxprune.presets._expand import apply_overrides, check_needs, expand, find_preset
from onnxprune.presets._preset import NEEDS, PRESETS, Preset, ordered

__all__ = ["NEEDS", "PRESETS", "Preset", "apply_overrides", "check_needs", "expand", "find_preset", "ordered"]
