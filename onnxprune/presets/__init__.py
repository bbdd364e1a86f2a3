"""Seed methods as named presets (``onnxprune presets``, ``--preset NAME``, ``preset:`` in recipes).

Each family module registers its presets in :data:`PRESETS` when imported below.
"""

from onnxprune.presets import ensembles  # noqa: F401  (registers its presets)
from onnxprune.presets._preset import NEEDS, PRESETS, Preset

__all__ = ["NEEDS", "PRESETS", "Preset"]
