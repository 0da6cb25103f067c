"""`fusion train` re-run on its own output resumes; its summary line counts this run's steps."""
import re

import numpy as np
import pytest
import torch

from fusion.cli import main
from sramsim.nn.models import build, save_checkpoint
from conftest import write_idx

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_resumed_train_prints_only_this_runs_steps(tmp_path, capsys):
    rng = np.random.default_rng(0)
    data = tmp_path / "data"
    data.mkdir()
    for prefix, n in (("train", 32), ("t10k", 8)):
        write_idx(data / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 255, (n, 16, 16)))
        write_idx(data / f"{prefix}-labels-idx1-ubyte.gz", rng.integers(0, 2, n))
    torch.manual_seed(0)
    base = tmp_path / "base.pt"
    save_checkpoint(base, build("cnn", 1, 2).eval(),
                    {"arch": "cnn", "in_channels": 1, "num_classes": 2, "norm": "batch", "bits": 8,
                     "scheme": "symmetric", "clip": None, "dataset": str(data)})

    def train(epochs):
        code = main(["train", "--base", str(base), "--data", str(data), "--ber", "0.02",
                     "--generator", "ConvS", "--width", "0.25", "--n-perturbed", "1",
                     "--batch-size", "16", "--epochs", str(epochs), "--out", str(tmp_path / "g"),
                     "--no-progress"])
        out = capsys.readouterr().out
        assert code == 0
        return int(re.search(r"\((\d+) steps this run", out).group(1)), out

    assert train(1)[0] == 2                          # 32 samples / 16 per batch
    steps, out = train(3)                            # resumes after epoch 1: 2 epochs left
    assert steps == 4 and "6 in all" in out
