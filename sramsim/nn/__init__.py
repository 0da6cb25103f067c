"""Networks: the model registry and checkpoints, data sets, training (QAT, RandBET) and evaluation."""
