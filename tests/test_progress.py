"""Progress: tqdm on a terminal, a plain periodic line otherwise (a log file or pipe), nothing
when disabled; and the long steps issue 23 named report through it."""
from __future__ import annotations

import io
from pathlib import Path

import pytest

from sramsim import progress as P
from sramsim.nn.data import FASHION_MNIST_DIR


class Tty(io.StringIO):
    def isatty(self):
        return True


def test_plain_lines_off_a_terminal():
    out = io.StringIO()
    bar = P.progress(range(4), desc="sweep", unit="pt", every=0.0, file=out)
    assert isinstance(bar, P.PlainProgress)
    assert list(bar) == [0, 1, 2, 3]
    bar.set_postfix(loss="0.5")
    bar.close()
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("sweep: 1/4 pt (25%), 0s, ~") and lines[0].endswith("left")
    assert lines[3].startswith("sweep: 4/4 pt (100%)")
    assert lines[-1].startswith("sweep: 4/4 pt (100%), 0s") and "loss=0.5" in lines[-1]


def test_a_short_step_prints_nothing_off_a_terminal():
    out = io.StringIO()
    with P.progress(total=3, desc="x", file=out) as bar:      # every = PLAIN_EVERY (10 s)
        bar.update(3)
    assert out.getvalue() == ""


def test_terminal_gets_tqdm_and_disabled_gets_nothing():
    from tqdm import tqdm
    bar = P.progress(total=2, desc="x", file=Tty())
    assert isinstance(bar, tqdm)
    bar.close()
    out = io.StringIO()
    silent = P.progress([1, 2], enabled=False, every=0.0, file=out)
    assert list(silent) == [1, 2] and out.getvalue() == ""


def test_duration():
    assert [P.duration(s) for s in (4.4, 65, 3725)] == ["4s", "1m05s", "1h02m"]


def test_train_base_reports_off_a_terminal(tmp_path, monkeypatch, capsys):
    """train-base's bar used to vanish when stderr was not a terminal (tqdm disable=None)."""
    from conftest import write_quadrants
    from sramsim.commands.main import main
    monkeypatch.setattr(P, "PLAIN_EVERY", 0.0)
    data = write_quadrants(tmp_path, 64, 16)
    assert main(["train-base", "--model", "cnn", "--data", str(data), "--epochs", "1",
                 "--batch-size", "16", "--out", str(tmp_path / "m.pt")]) == 0
    err = capsys.readouterr().err.splitlines()
    assert "epoch 1/1: 1/4 batch (25%)" in "\n".join(err)
    assert any(line.startswith("epoch 1/1: 4/4 batch (100%)") for line in err)


@pytest.mark.parametrize("flag", [[], ["--no-progress"]])
@pytest.mark.skipif(not Path(FASHION_MNIST_DIR).is_dir(), reason="Fashion-MNIST not installed")
def test_fusion_eval_reports_per_map(tmp_path, monkeypatch, capsys, cnn_checkpoint, flag):
    from fusion.cli import main
    monkeypatch.setattr(P, "PLAIN_EVERY", 0.0)
    path, _ = cnn_checkpoint
    assert main(["eval", "--base", str(path), "--ber", "0.01", "--models", "3", "--limit", "50",
                 *flag]) == 0
    err = capsys.readouterr().err
    assert ("fusion eval: 3/3 map (100%)" in err) == (not flag)
