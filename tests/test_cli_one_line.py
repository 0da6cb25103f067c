"""One line, always: argparse's refusals in every subcommand of `sramsim` and `fusion`, runtime
failures (exit 1) apart from bad input (exit 2), and library bad input as InputError."""
import argparse
import errno

import pytest

from fusion.cli import parser as fusion_parser
from sramsim.commands.main import Parser, build_parser, main, run_main
from sramsim.errors import InputError, RunError


def choice_actions(parser: argparse.ArgumentParser, path=()):
    """(argv prefix, option string, choices) of every option with choices, in every subcommand."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from choice_actions(sub, (*path, name))
        elif action.choices and action.option_strings:
            yield path, action.option_strings[-1], [str(c) for c in action.choices]


PARSERS = {"sramsim": build_parser, "fusion": fusion_parser}
CASES = [(prog, *case) for prog, make in PARSERS.items() for case in choice_actions(make())]


def test_every_choice_option_is_found():
    names = {(prog, " ".join(path), option) for prog, path, option, _ in CASES}
    assert ("sramsim", "vuln", "--by") in names and ("sramsim", "dram tolerance", "--mapping") in names
    assert len(CASES) >= 15


@pytest.mark.parametrize("prog,path,option,choices", CASES,
                         ids=[f"{c[0]} {' '.join(c[1])} {c[2]}" for c in CASES])
def test_choice_errors_are_one_line_naming_option_and_values(capsys, prog, path, option, choices):
    with pytest.raises(SystemExit) as exit_:
        run_main(PARSERS[prog](), [*path, option, "__bogus__"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "usage" not in err, err
    assert option in err and "__bogus__" in err and all(c in err for c in choices), err


@pytest.mark.parametrize("argv", [["nosuchcommand"], ["sweep", "--nosuch"], ["dram"],
                                  ["vuln", "--model"]])
def test_other_parser_errors_are_one_line(capsys, argv):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "usage" not in err, err


def _failing(exc: BaseException) -> argparse.ArgumentParser:
    p = Parser(prog="t")

    def func(args):
        raise exc
    p.set_defaults(func=func)
    return p


@pytest.mark.parametrize("exc,code", [
    (RunError("all 2 Ray worker(s) died; re-run to resume"), 1),
    (OSError(errno.ENOSPC, "No space left on device", "/out/points.jsonl"), 1),
    (OSError(errno.ENAMETOOLONG, "File name too long", "x" * 300), 2),
    (InputError("bad\nvalue"), 2),
    (FileNotFoundError(errno.ENOENT, "No such file or directory", "a.pt"), 2),
])
def test_runtime_failures_exit_1_and_bad_input_2_in_one_line(capsys, exc, code):
    assert run_main(_failing(exc), []) == code
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith("t: error: "), err


def test_ray_workers_lost_is_a_runtime_failure():
    from sramsim.analysis.executors import RayWorkersLost
    assert issubclass(RayWorkersLost, RunError) and not issubclass(RayWorkersLost, InputError)


def test_huge_geometry_is_refused_in_exactly_one_line(cnn_checkpoint, tmp_path, capfd):
    path, _ = cnn_checkpoint
    assert main(["sweep", "--model", str(path), "--chips", "1", "--rows", "1000000000",
                 "--cols", "2048", "--voltages", "0.9", "--out", str(tmp_path / "o")]) == 2
    err = capfd.readouterr().err
    assert err.count("\n") == 1 and err.startswith("sramsim: error: a random chip of "), repr(err)
    assert "more than this machine's" in err
    assert not (tmp_path / "o").exists()


def _public_bad_inputs():
    """(what, call) pairs: public library entry points given bad input."""
    import numpy as np
    import torch

    from sramsim import BerCurve, Chip, Geometry, QuantizedModel, RandomBitErrors
    from sramsim.inject.mapping import apply_faults
    from sramsim.inject.quantization import check_scheme
    from sramsim.nn.evaluation import evaluate
    from sramsim.stats import mean_std
    from fusion.generators import build
    from sramsim.analysis.sparkxd import StudyOptions
    from sramsim.analysis.sparkxd import check as check_study
    from sramsim.analysis.store import ResultStore
    from sramsim.memory.dram_curves import dram_curve
    from sramsim.nn.training import TrainOptions
    model = torch.nn.Sequential(torch.nn.Linear(4, 3))
    qm = QuantizedModel(model)
    return [
        ("curve name", lambda: BerCurve.builtin("nosuch")),
        ("curve table", lambda: BerCurve.from_table([1.0, 0.9], [0.1, 0.0])),
        ("gaussian sigma", lambda: BerCurve.gaussian(0.7, 0.0)),
        ("scheme", lambda: check_scheme("nosuch", 8)),
        ("bits", lambda: check_scheme("symmetric", 3)),
        ("model type", lambda: QuantizedModel("not a model")),
        ("word bits", lambda: QuantizedModel(model, word_bits=5)),
        ("chip without voltage", lambda: qm.faulty_image(
            Chip.random(Geometry(64, 64), BerCurve.builtin("finfet14"), 0.8, 0))),
        ("source type", lambda: apply_faults(qm.image, object())),
        ("empty summary", lambda: mean_std([])),
        ("batch size", lambda: evaluate(model, _tiny_dataset(), batch_size=0)),
        ("generator", lambda: build("nosuch", 1)),
        ("random errors", lambda: RandomBitErrors(float("nan"))),
        ("image", lambda: qm.dequantize(np.zeros(3, np.int64))),
        ("train options", lambda: TrainOptions(randbet_p=0.1, randbet_start=2, epochs=2)),
        ("fat options", lambda: TrainOptions(fat_ber=0.01, fat_source="sram")),
        ("study options", lambda: check_study(StudyOptions(out="x", margin=2.0))),
        ("dram curve", lambda: dram_curve("/nonexistent/curve.csv")),
        ("store", lambda: ResultStore(__file__, {})),
    ]


def _tiny_dataset():
    import torch

    from sramsim.nn.data import Dataset
    return Dataset(torch.zeros(2, 4), torch.zeros(2, dtype=torch.long), 3, "tiny")


@pytest.mark.parametrize("index", range(19))
def test_library_bad_input_is_input_error_without_flag_names(index):
    what, call = _public_bad_inputs()[index]
    with pytest.raises(InputError) as err:
        call()
    message = str(err.value)
    assert message and "\n" not in message and "--" not in message, (what, message)


def test_flagged_writes_parameter_names_as_flags():
    from sramsim.commands.main import flagged
    exc = flagged(InputError("randbet_start delays RandBET; it needs randbet_p"),
                  ["randbet_start", "randbet_p", "epochs"])
    assert str(exc) == "--randbet-start delays RandBET; it needs --randbet-p"
    assert str(flagged(InputError("epochs must be >= 1"), ["epochs"])) == "--epochs must be >= 1"
    assert str(flagged(InputError("bisect_steps must be >= 0"), {"bisect_steps": "--bisect"})) \
        == "--bisect must be >= 0"
    assert str(flagged(InputError("the epochs were 3"), ["epochs"])) == "the epochs were 3"
