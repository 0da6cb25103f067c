"""Networks: the model registry and checkpoints, data sets, training (QAT, RandBET, fault-aware)
and evaluation under faults.

The names users reach for are here: `build` / `load_checkpoint` / `save_checkpoint` (the model
registry), `load_dataset` / `Dataset`, `accuracy` / `evaluate`, and `Evaluator` (a quantized
model under one fault map after another).
"""
from sramsim.nn.data import Dataset, load_dataset
from sramsim.nn.evaluation import Evaluator, accuracy, evaluate
from sramsim.nn.models import build, load_checkpoint, save_checkpoint

__all__ = ["Dataset", "Evaluator", "accuracy", "build", "evaluate", "load_checkpoint",
           "load_dataset", "save_checkpoint"]
