"""Traps a new user fell into (issue 23), each held by a test: a generator that costs more energy
than it saves, and a shuffle sweep that printed the array's saving without its table's reads."""
from __future__ import annotations

import io
import re
import shlex
from pathlib import Path

from fusion.cli import parser as fusion_parser
from fusion.commands.train import cost_note
from fusion.eopm import EopmConfig
from fusion.evaluation import FaultSpec
from sramsim.commands.sweep import add_net_saving, print_table
from sramsim.nn.models import build

ROOT = Path(__file__).resolve().parents[1]


def test_fusion_train_says_when_the_generator_does_not_pay():
    cnn = build("cnn", 1, 10)
    note = cost_note(EopmConfig(generator="ConvS", width=1.0), cnn, 1, FaultSpec(ber=0.01))
    assert note.startswith("note: ConvS at --width 1 reads 111,177 weights per inference")
    assert "net memory-energy saving of -97.6%" in note and "--width 0.25 nets 22.1%" in note
    assert cost_note(EopmConfig(generator="ConvS", width=0.25), cnn, 1, FaultSpec(ber=0.01)) is None


def test_the_readme_tour_trains_a_generator_that_pays():
    """Every `fusion train` the README and the package description show keeps a positive net
    saving on the default CNN at its BER."""
    lines = [line.strip() for f in ("README.md", "PACKAGE.md")
             for line in (ROOT / f).read_text().splitlines()
             if line.strip().startswith("fusion train ")]
    assert lines
    for line in lines:
        args = fusion_parser().parse_args(shlex.split(line)[1:])
        config = EopmConfig(generator=args.generator, width=float(args.width))
        assert cost_note(config, build("cnn", 1, 10), 1, FaultSpec(ber=float(args.ber))) is None, line


def test_shuffle_sweep_prints_the_net_saving():
    point = {"voltage": 0.775, "ber": 0.0948, "accuracy_mean": 0.41, "ci95": 0.0,
             "accuracy_std": 0.0, "n": 1, "energy_per_read": 0.600625, "saving": 0.399375,
             "bit_placement": {"dense_table_share": 0.375, "table_bits_per_word": 3.0}}
    summary = add_net_saving({"points": [dict(point)], "bit_placement": {
        "policy": "shuffle", "table_bits_per_word": 3}, "files": {
        "summary_json": "s.json", "summary_csv": "s.csv"}})
    assert abs(summary["points"][0]["net_saving"] - 0.024375) < 1e-12
    out = io.StringIO()
    print_table(summary, out)
    row = next(line for line in out.getvalue().splitlines() if line.strip().startswith("0.775"))
    assert re.search(r"39\.9%\s+2\.4%", row), row
    plain = add_net_saving({"points": [{**point, "bit_placement": None}]})
    assert "net_saving" not in plain["points"][0]
