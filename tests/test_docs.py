"""The documentation cannot rot: the site builds strictly, every code block of every page runs (at
small size, `docs_runner.SMALL`) or at least parses, the generated pages cover every command and
read the result files, the README stays a short front page, and the sample measured chip is what
its script writes."""
from __future__ import annotations

import gzip
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import docs_runner as R
from sramsim.nn.data import FASHION_MNIST_DIR

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted(p for p in DOCS.rglob("*.md") if "hooks" not in p.parts)
RUNNABLE = [p for p in PAGES if any(b.run and b.lang in ("python", "sh", "console")
                                    for b in R.blocks(p.read_text()))]


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def generate():
    """docs/hooks/generate.py, the build-time generators."""
    return _load("docs_generate", DOCS / "hooks" / "generate.py")


def _fake_fashion(root: Path) -> Path:
    """A Fashion-MNIST-shaped IDX set (28x28, 10 classes) for machines without the real one."""
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 1200), ("t10k", 600)):
        y = np.arange(n) % 10
        x = rng.integers(0, 60, (n, 28, 28))
        for c in range(10):
            x[y == c, 2 * c:2 * c + 8, 4:24] += 150
        for suffix, array in (("images-idx3-ubyte", x), ("labels-idx1-ubyte", y)):
            header = bytes([0, 0, 8, array.ndim]) + b"".join(
                int(d).to_bytes(4, "big") for d in array.shape)
            with gzip.open(root / f"{prefix}-{suffix}.gz", "wb") as f:
                f.write(header + array.astype(np.uint8).tobytes())
    return root


@pytest.fixture(scope="module")
def docs_env(tmp_path_factory) -> dict:
    """The environment the blocks run in: this checkout and its console scripts first on the
    paths, Fashion-MNIST (the real one, or a stand-in of its shape), no display."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["MPLBACKEND"] = "Agg"
    env["NO_MKDOCS_2_WARNING"] = "1"
    if not env.get("SRAMSIM_DATA") and not Path(FASHION_MNIST_DIR, "t10k-images-idx3-ubyte.gz").exists():
        env["SRAMSIM_DATA"] = str(_fake_fashion(tmp_path_factory.mktemp("fashion")))
    return env


@pytest.fixture(scope="module")
def train_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("train-cache")


@pytest.mark.parametrize("page", RUNNABLE, ids=[str(p.relative_to(DOCS)) for p in RUNNABLE])
def test_page_blocks_run(page, docs_env, train_cache, tmp_path):
    """Every runnable block of the page, in order, in a fresh folder holding the sample chip."""
    shutil.copytree(DOCS / "data" / "measured-chip", tmp_path / "measured-chip")
    done = subprocess.run([sys.executable, str(Path(R.__file__)), str(page), "--cwd", str(tmp_path),
                           "--cache", str(train_cache)], env=docs_env, capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, f"{page.name}:\n{done.stdout[-6000:]}\n{done.stderr[-6000:]}"


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(DOCS)) for p in PAGES])
def test_every_block_parses(page):
    """Python compiles and every `sramsim`/`fusion` command parses, also in no-run blocks."""
    for block in R.blocks(page.read_text()):
        if block.lang in ("python", "sh", "console"):
            R.run_block(block, page.name, None, check_only=True)


def test_the_main_jobs_run():
    """Getting started's three jobs are run, not only parsed."""
    blocks = R.blocks((DOCS / "getting-started.md").read_text())
    ran = " ".join(" ".join(R.commands(b)) for b in blocks if b.run and b.lang == "sh")
    for job in ("sramsim sweep --model cnn.pt", "sramsim energy --model cnn.pt",
                "sramsim profile import measured-chip/"):
        assert job in ran


def test_runner_conventions():
    page = "\n".join(["```sh", "sramsim sweep --model m.pt \\", "    --limit 5000  # note", "```",
                      "<!-- no-run: slow -->", "```console", "$ fusion eval --maps 40", "output",
                      "```", "```python", '--8<-- "examples/x.py"', "```", "```text", "x", "```"])
    blocks = R.blocks(page)
    assert [(b.lang, b.run) for b in blocks] == [("sh", True), ("console", False),
                                                 ("python", False), ("text", True)]
    [command] = R.commands(blocks[0])
    argv = R.in_process(command)
    assert argv == ["sramsim", "sweep", "--model", "m.pt", "--limit", "5000"]
    assert R.small(argv) == ["sramsim", "sweep", "--model", "m.pt", "--limit", "200"]
    assert R.commands(blocks[1]) == ["fusion eval --maps 40"]
    assert R.small(["fusion", "eval", "--maps=40"]) == ["fusion", "eval", "--maps=2"]
    assert R.in_process("sramsim sweep --json > out.json") is None
    assert R.in_process("mkdir -p x") is None


def test_cli_reference_covers_every_command(generate):
    text = generate.cli_reference()
    for _, parser in generate.command_parsers():
        assert f"`{parser.prog}`" in text and parser.format_usage().split()[1] in text
    assert "sramsim dram tolerance" in text and "fusion eval" in text
    assert text.count("```text") == len(generate.command_parsers())


def test_generated_markers_expand_and_unknown_ones_fail(generate):
    for page in PAGES:
        for name in re.findall(r"<!-- generated: ([a-z0-9-]+) -->", page.read_text()):
            assert name in generate.GENERATORS, f"{page.name}: {name}"
    with pytest.raises(ValueError, match="unknown generated text 'nope'"):
        generate.expand("<!-- generated: nope -->\n")


def test_reproduction_tables_read_the_results(generate):
    import json
    fresh = json.loads((ROOT / "benchmarks/results/neuralfuse_fresh.json").read_text())
    frac = fresh["headline_fresh_maps"]["0.01"]["recovered_fraction"]
    assert f"**{100 * frac:.1f}%**" in generate.GENERATORS["neuralfuse-fresh"]()
    stutz = generate.GENERATORS["stutz-highber"]()
    assert "77.90 / 86.4" in stutz and "| RandBET (w_max 0.025, trained at p = 20%) |" in stutz
    sparkxd = generate.GENERATORS["sparkxd"]()
    assert "**4.22x**" in sparkxd and "~10x (EDEN)" in sparkxd and "~40% (SparkXD)" in sparkxd
    assert "**<= 0.10x**" in sparkxd and ">= 3.16e-02 (0.893 V)" in sparkxd
    energy = generate.GENERATORS["equal-energy"]()
    assert "| clipping | 88.8% / 0.8375 / 29.9% | 87.1% / 0.9 / 19.0% | 16 + 79 / 63 + 220 |" in energy
    assert "| 0.7875 (BER 6.4%) | 38.0% | never |" in generate.GENERATORS["stutz-chips"]()


def test_neuralfuse_counts_table(generate):
    table = generate.GENERATORS["neuralfuse-counts"]()
    assert "| ResNet18 | 2,755,968 | 2,755,968 | yes |" in table
    assert "| UNetL | 180,894 | 173,952 | no (-3.8%) |" in table


def test_readme_is_a_short_front_page():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 150
    for link in re.findall(r"\]\((docs/[^)#]+)", text):
        assert (ROOT / link).exists(), link


def test_sample_measured_chip_is_what_its_script_writes():
    script = _load("make_measured_chip", DOCS / "data" / "make_measured_chip.py")
    files = script.observations()
    on_disk = sorted(p.name for p in (DOCS / "data" / "measured-chip").glob("*.npy"))
    assert on_disk == sorted(files)
    for name, bits in files.items():
        stored = np.load(DOCS / "data" / "measured-chip" / name, allow_pickle=False)
        assert stored.dtype == bits.dtype and np.array_equal(stored, bits), name


def test_site_builds_strictly(docs_env, tmp_path):
    """`mkdocs build --strict`: any warning (a broken link or anchor, a docstring mkdocstrings
    cannot read, a generator that fails) fails the build. `make test` requires it; elsewhere it
    needs requirements-docs.txt installed."""
    if importlib.util.find_spec("mkdocs") is None:
        if os.environ.get("SRAMSIM_DOCS_REQUIRED"):
            pytest.fail("mkdocs is not installed: pip install -r requirements-docs.txt")
        pytest.skip("mkdocs not installed (pip install -r requirements-docs.txt; make test does)")
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q",
                           "-d", str(tmp_path / "site")], cwd=ROOT, env=docs_env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    page = (tmp_path / "site" / "getting-started" / "index.html").read_text()
    assert "Your measured chip" in page and "sweep-shipped.png" in page
    cli = (tmp_path / "site" / "reference" / "cli" / "index.html").read_text()
    assert "sramsim sweep" in cli and "generated:" not in cli
    api = (tmp_path / "site" / "reference" / "api" / "index.html").read_text()
    assert "MemoryLayout" in api and "Evaluator" in api
