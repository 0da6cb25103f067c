"""Experiment files (`--config FILE.toml`): same keys as the flags, flags win, unknown keys are a
one-line error, and every run writes the run.toml that repeats it."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from fusion.cli import main as fusion_main, parser as fusion_parser
from sramsim.commands import config as C
from sramsim.commands.main import build_parser, main
from sramsim.errors import InputError
from sramsim.nn.data import FASHION_MNIST_DIR

needs_data = pytest.mark.skipif(not Path(FASHION_MNIST_DIR).is_dir(),
                                reason="Fashion-MNIST not installed")


def merged(argv: list[str], parser=None):
    parser = parser or build_parser()
    args = parser.parse_args(argv)
    C.apply(parser, args, argv)
    return args


def test_file_fills_in_and_flags_win(tmp_path):
    cfg = tmp_path / "s.toml"
    cfg.write_text('model = "cnn.pt"\nvoltages = "1.0:0.8:-0.05"\nout = "from-file"\n'
                   'profiles = ["shipped:finfet14-8192x128-s0", "my.h5"]\nlimit = 500\n'
                   'batch_size = 100\nno-progress = true\nexecutor = "local"\n')
    args = merged(["sweep", "--config", str(cfg), "--out", "from-flag", "--limit", "200"])
    assert args.model == "cnn.pt" and args.voltages == "1.0:0.8:-0.05"
    assert args.out == "from-flag" and args.limit == "200"           # the command line wins
    assert args.profiles == ["shipped:finfet14-8192x128-s0", "my.h5"] and args.chips is None
    assert args.batch_size == "100" and args.no_progress is True
    # a flag of an exclusive group replaces the file's choice from that group
    args = merged(["sweep", "--config", str(cfg), "--chips", "3"])
    assert args.chips == "3" and args.profiles is None


@pytest.mark.parametrize("text, needle", [
    ('modle = "cnn.pt"\n', "unknown key 'modle'"),
    ('executor = "slurm"\n', "executor must be one of local, ray"),
    ('no_progress = "yes"\n', "no_progress must be true or false"),
    ('limit = [1, 2]\n', "limit takes one value"),
    ('limit = 1\n[table]\nx = 1\n', "unknown key 'table'"),
    ('limit = \n', "not valid TOML"),
])
def test_bad_files_are_one_line_errors(tmp_path, capsys, text, needle):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(text)
    assert main(["sweep", "--config", str(cfg), "--model", "m.pt", "--chips", "1",
                 "--voltages", "1.0", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and needle in err and str(cfg) in err, err
    assert not (tmp_path / "o").exists()


def test_required_flags_may_come_from_either_place(tmp_path, capsys):
    assert main(["sweep", "--chips", "1", "--voltages", "1.0", "--out", str(tmp_path / "o")]) == 2
    assert "--model is required (on the command line or in --config)" in capsys.readouterr().err
    assert main(["sweep", "--model", "m.pt", "--voltages", "1.0", "--out", "o"]) == 2
    assert "one of --profiles --chips is required" in capsys.readouterr().err
    cfg = tmp_path / "two.toml"
    cfg.write_text('chips = "2"\nprofiles = ["a.h5"]\n')
    with pytest.raises(InputError, match="profiles and chips exclude each other"):
        merged(["sweep", "--config", str(cfg), "--model", "m", "--voltages", "1", "--out", "o"])


def test_run_file_round_trips_every_kind_of_value(tmp_path):
    args = merged(["sweep", "--model", 'we"ird\\name.pt', "--profiles", "a.h5", "b c.h5",
                   "--voltages", "0.9,0.8", "--out", "o", "--no-progress", "--json"])
    path = C.write_run_file(args, tmp_path / "o")
    text = path.read_text()
    assert text.startswith("# `sramsim sweep` settings") and "no-progress" not in text
    again = merged(["sweep", "--config", str(path)])
    for dest in ("model", "profiles", "voltages", "out", "threads", "executor", "bit_placement",
                 "mapping"):
        assert getattr(again, dest) == getattr(args, dest), dest


def test_the_four_long_commands_take_config():
    for prog, argv in (("sramsim", ["sweep"]), ("sramsim", ["sparkxd"]),
                       ("sramsim", ["dram", "tolerance"]), ("fusion", ["train"])):
        top = build_parser() if prog == "sramsim" else fusion_parser()
        args = top.parse_args([*argv, "--config", "x.toml"])
        assert args.config == "x.toml" and getattr(args, C.PARSER) is not None


@needs_data
def test_a_sweep_repeats_from_its_own_output(tmp_path, cnn_checkpoint, capsys):
    path, _ = cnn_checkpoint
    first = ["sweep", "--model", str(path), "--chips", "1", "--rows", "512", "--cols", "256",
             "--voltages", "0.9,0.85", "--limit", "30", "--out", str(tmp_path / "a"),
             "--no-progress", "--json"]
    assert main(first) == 0
    a = json.loads(capsys.readouterr().out)
    run_file = tmp_path / "a" / "run.toml"
    assert f'out = "{tmp_path / "a"}"' in run_file.read_text()
    assert main(["sweep", "--config", str(run_file), "--out", str(tmp_path / "b"), "--json"]) == 0
    b = json.loads(capsys.readouterr().out)
    assert [p["accuracy_mean"] for p in a["points"]] == [p["accuracy_mean"] for p in b["points"]]
    assert (tmp_path / "b" / "run.toml").read_text().replace("/b", "/a") == run_file.read_text()


@needs_data
def test_fusion_train_and_dram_tolerance_write_their_run_files(tmp_path, cnn_checkpoint, capsys):
    path, _ = cnn_checkpoint
    out = tmp_path / "g"
    assert fusion_main(["train", "--base", str(path), "--ber", "0.01", "--epochs", "1",
                        "--limit", "32", "--batch-size", "16", "--n-perturbed", "1",
                        "--width", "0.25", "--out", str(out), "--no-progress"]) == 0
    assert (out / "training.png").is_file() and 'width = "0.25"' in (out / "run.toml").read_text()
    assert fusion_main(["train", "--config", str(out / "run.toml"), "--no-progress"]) == 0
    assert "0 steps this run" in capsys.readouterr().out          # resumed: already done
    tol = tmp_path / "t"
    assert main(["dram", "tolerance", "--model", str(path), "--limit", "20", "--maps", "1",
                 "--ber-range", "1e-4,1e-3", "--bisect", "0", "--out", str(tol),
                 "--no-progress"]) == 0
    assert 'maps = "1"' in (tol / "run.toml").read_text() and (tol / "tolerance.png").is_file()


def test_bad_input_writes_no_run_file(tmp_path, capsys):
    assert main(["sweep", "--model", str(tmp_path / "missing.pt"), "--chips", "1", "--voltages",
                 "0.9", "--out", str(tmp_path / "o")]) == 2
    assert not (tmp_path / "o" / "run.toml").exists()
