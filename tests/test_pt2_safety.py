"""A hostile `.pt2` file runs nothing: `load_exported` checks the archive before torch reads it.

Three crafted variants of a genuine PT2E program (a weight marked `use_pickle`, an extra legacy
`data/weights/model.pt`, pickled `sample_inputs`) each carry a pickle whose loading would create a
marker file (`torch.export.load` alone creates it for all three). Through `sweep`, `vuln` and
`dram tolerance` each is refused in one line on stderr with exit status 2, and no marker appears.
"""
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import write_quadrants
from sramsim.commands.main import main
from sramsim.errors import InputError
from sramsim.inject.torch_quantized import load_exported
from test_torch_quantized_cli import Net, export_pt2e

pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning"),
              pytest.mark.filterwarnings("ignore::UserWarning"),
              pytest.mark.filterwarnings("ignore::FutureWarning")]

VARIANTS = ("use_pickle", "legacy_weights", "sample_inputs")


class Payload:
    """Unpickling this opens (creates) `marker` for writing: the code a hostile file runs."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def craft(genuine: Path, out: Path, variant: str, marker: Path) -> Path:
    """`genuine` with one member replaced or added so that torch.export.load would unpickle
    a `Payload(marker)`."""
    from torch.export.pt2_archive import PT2ArchiveReader, PT2ArchiveWriter
    evil = io.BytesIO()
    torch.save(Payload(str(marker)), evil)
    with PT2ArchiveReader(str(genuine)) as reader:
        files = {n: reader.read_bytes(n) for n in reader.get_file_names()}
    if variant == "use_pickle":
        config = json.loads(files["data/weights/model_weights_config.json"])
        entry = config["config"]["conv.weight"]
        entry["use_pickle"] = True
        files["data/weights/model_weights_config.json"] = json.dumps(config).encode()
        files["data/weights/" + entry["path_name"]] = evil.getvalue()
    elif variant == "legacy_weights":
        files["data/weights/model.pt"] = evil.getvalue()
    else:
        files["data/sample_inputs/model.pt"] = evil.getvalue()
    with PT2ArchiveWriter(str(out)) as writer:
        for name, body in files.items():
            if name not in (".data/version", ".data/serialization_id", "byteorder"):
                writer.write_bytes(name, body)
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """(data dir, genuine q.pt2, {variant: crafted file}, {variant: marker path})."""
    root = write_quadrants(tmp_path_factory.mktemp("pt2"), 64, 40)
    torch.manual_seed(0)
    genuine = root / "q.pt2"
    export_pt2e(Net().eval(), torch.rand(16, 1, 16, 16), genuine)
    markers = {v: root / f"ran-{v}" for v in VARIANTS}
    crafted = {v: craft(genuine, root / f"evil-{v}.pt2", v, markers[v]) for v in VARIANTS}
    return root, genuine, crafted, markers


def test_torch_alone_would_run_each_payload(world, tmp_path):
    """The premise: without the check, torch.export.load runs every variant's pickle."""
    import torchao  # noqa: F401  (registers the quantized ops the graph names)
    _, genuine, _, _ = world
    for variant in VARIANTS:
        marker = tmp_path / f"ran-{variant}"
        path = craft(genuine, tmp_path / f"{variant}.pt2", variant, marker)
        try:
            torch.export.load(str(path))
        except Exception:   # noqa: BLE001 (it may fail after running the payload)
            pass
        assert marker.exists(), variant


def test_genuine_program_still_loads(world):
    _, genuine, _, _ = world
    gm = load_exported(genuine)
    assert gm(torch.rand(3, 1, 16, 16)).shape == (3, 4)


@pytest.mark.parametrize("variant", VARIANTS)
def test_load_exported_refuses_and_runs_nothing(world, variant):
    _, _, crafted, markers = world
    with pytest.raises(InputError, match="refused"):
        load_exported(crafted[variant])
    assert not markers[variant].exists()


COMMANDS = {
    "sweep": ["sweep", "--data", "{data}", "--voltages", "1.0,0.9", "--chips", "1", "--rows",
              "64", "--cols", "128", "--no-progress", "--out", "{out}"],
    "vuln": ["vuln", "--data", "{data}", "--ber", "0.01", "--no-progress"],
    "dram tolerance": ["dram", "tolerance", "--data", "{data}", "--maps", "1", "--no-progress"],
}


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("command", COMMANDS)
def test_commands_refuse_in_one_line_and_run_nothing(world, tmp_path, capfd, command, variant):
    data, _, crafted, markers = world
    argv = [a.format(data=data, out=tmp_path / "out") for a in COMMANDS[command]]
    assert main([*argv, "--model", str(crafted[variant])]) == 2
    err = capfd.readouterr().err
    assert len(err.splitlines()) == 1 and "refused" in err, err
    assert not markers[variant].exists()


def test_console_script_prints_one_line(world, tmp_path):
    """The real process: one line on stderr, exit 2, no marker (sample-inputs variant)."""
    data, _, crafted, markers = world
    argv = [a.format(data=data, out=tmp_path / "out") for a in COMMANDS["sweep"]]
    run = subprocess.run([sys.executable, "-m", "sramsim.commands.main", *argv, "--model",
                          str(crafted["sample_inputs"])], capture_output=True, text=True,
                         cwd=Path(__file__).parents[1], timeout=300)
    assert run.returncode == 2, run.stderr
    assert len(run.stderr.splitlines()) == 1 and "refused" in run.stderr, run.stderr
    assert not markers["sample_inputs"].exists()


def test_other_unpicklable_members_are_refused(world, tmp_path):
    """Custom-object constants, stray .pkl members and AOTInductor files are refused too."""
    from torch.export.pt2_archive import PT2ArchiveReader, PT2ArchiveWriter
    _, genuine, _, _ = world
    with PT2ArchiveReader(str(genuine)) as reader:
        files = {n: reader.read_bytes(n) for n in reader.get_file_names()}
    const = {"config": {"obj": {"path_name": "custom_obj_0", "is_param": False,
                                "use_pickle": False, "tensor_meta": None}}}
    cases = {"constant": {"data/constants/model_constants_config.json":
                          json.dumps(const).encode(), "data/constants/custom_obj_0": b"x"},
             "pkl": {"data.pkl": b"\x80\x02N."},
             "aoti": {"data/aotinductor/model/model.so": b"\x7fELF"}}
    for case, changes in cases.items():
        path = tmp_path / f"{case}.pt2"
        with PT2ArchiveWriter(str(path)) as writer:
            for name, body in {**files, **changes}.items():
                if name not in (".data/version", ".data/serialization_id", "byteorder"):
                    writer.write_bytes(name, body)
        with pytest.raises(InputError, match="refused"):
            load_exported(path)
