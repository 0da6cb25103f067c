"""One version for the distribution: sramsim.__version__, fusion.__version__, both CLIs' --version
and setup.cfg (which reads sramsim/_version.py) agree."""
from __future__ import annotations

import configparser
from pathlib import Path

import pytest

import fusion
import sramsim
from fusion.cli import main as fusion_main
from sramsim.commands.main import main as sramsim_main

ROOT = Path(__file__).resolve().parents[1]


def test_one_version():
    assert sramsim.__version__ == fusion.__version__ == "0.2.0"
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    assert cfg["metadata"]["version"] == "attr: sramsim._version.__version__"


@pytest.mark.parametrize("main, prog", [(sramsim_main, "sramsim"), (fusion_main, "fusion")])
def test_version_flag(main, prog, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"{prog} {sramsim.__version__}"


def test_changelog_names_the_version():
    assert f"## {sramsim.__version__}" in (ROOT / "CHANGELOG.md").read_text()
