"""Spiking models are models like any other: a trained snn-fc / diehl-cook checkpoint goes through
`sramsim sweep`, `sramsim vuln` and `sramsim dram tolerance` as a user would run them, and only
its synapses are in the memory image those commands fault."""
import json

import pytest

from sramsim import QuantizedModel
from sramsim.commands.main import main
from sramsim.nn.models import load_checkpoint
from sramsim.nn.training import TrainOptions, train_base
from conftest import write_quadrants

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def snn_checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("snn")
    data = write_quadrants(root, 160, 80)
    paths = {}
    for arch, opts in (("snn-fc16", TrainOptions(epochs=1, batch_size=32, lr=5e-3)),
                       ("diehl-cook8", TrainOptions(epochs=1, batch_size=16))):
        paths[arch] = root / f"{arch}.pt"
        train_base(arch, str(data), paths[arch], opts, progress=False, log=None)
    return data, paths


@pytest.mark.parametrize("arch", ["snn-fc16", "diehl-cook8"])
def test_spiking_checkpoint_sweeps_vulns_and_finds_its_tolerance(arch, snn_checkpoints,
                                                                 tmp_path, capsys):
    data, paths = snn_checkpoints
    ckpt = str(paths[arch])
    model, meta = load_checkpoint(ckpt)
    qm = QuantizedModel(model, meta["bits"], meta["scheme"])
    assert qm.n_codes == sum(p.numel() for p in model.parameters())   # synapses only

    assert main(["sweep", "--model", ckpt, "--data", str(data), "--chips", "2", "--rows", "64",
                 "--cols", "256", "--voltages", "0.9,0.8", "--out", str(tmp_path / "sweep"),
                 "--no-progress", "--json"]) == 0
    sweep = json.loads(capsys.readouterr().out)
    rows = {round(r["voltage"], 3): r for r in sweep["points"]}
    assert set(rows) == {0.9, 0.8} and all(r["n"] == 2 for r in rows.values())
    assert all(0.0 <= r["accuracy_mean"] <= 1.0 for r in rows.values())

    assert main(["vuln", "--model", ckpt, "--data", str(data), "--ber", "0.05", "--models", "2",
                 "--no-progress", "--json"]) == 0
    vuln = json.loads(capsys.readouterr().out)
    assert sorted(g["layer"] for g in vuln["layers"]) == sorted(qm.names)
    assert vuln["all"]["n_bits"] == qm.n_codes * meta["bits"]

    assert main(["dram", "tolerance", "--model", ckpt, "--data", str(data), "--maps", "1",
                 "--ber-range", "1e-5,1e-3", "--bisect", "1", "--no-progress", "--json",
                 "--ber-source", "random", "--out", str(ckpt) + "-tol"]) == 0
    tol = json.loads(capsys.readouterr().out)
    assert tol["weight_bytes"] == qm.image.size
    assert tol["tolerable_ber"] is None or 1e-5 <= tol["tolerable_ber"] <= 1e-3
    assert tol["energy"]["drmap"]["energy_nominal_J"] > 0
