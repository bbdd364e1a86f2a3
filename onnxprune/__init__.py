"""onnxprune: make ONNX models smaller and faster without the training code.

Public API::

    import onnxprune
    from onnxprune.passes import UnstructuredPrunePass, UnstructuredPruneConfig

    model = onnxprune.load("model.onnx")
    onnxprune.Pipeline([UnstructuredPrunePass(UnstructuredPruneConfig(sparsity=0.5))])(model)
    onnxprune.save(model, "pruned.onnx")
"""

from onnxprune._io import load, save
from onnxprune.context import PassContext
from onnxprune.errors import OnnxPruneError
from onnxprune.pipeline import Pipeline, PipelineResult
from onnxprune.recipe import Recipe, run_recipe

__version__ = "0.1.0"

__all__ = ["OnnxPruneError", "PassContext", "Pipeline", "PipelineResult", "Recipe", "load", "run_recipe", "save"]
