"""The benchmarks' provenance and reporting helpers, and the committed results JSONs themselves."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import common  # noqa: E402

RESULT_FILES = sorted((ROOT / "benchmarks" / "results").glob("*.json"))


def test_environment_records_commit_command_machine_and_detected_device(monkeypatch):
    import torch
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                          text=True).stdout.strip()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i: "Test GPU")
    env = common.environment()
    assert env["git"]["commit"] == head and isinstance(env["git"]["dirty"], bool)
    assert env["devices_detected"] == {"cuda_available": True, "cuda_devices": ["Test GPU"],
                                       "torch_cuda_build": torch.version.cuda}
    assert env["machine"]["memory_gib"] > 0 and env["machine"]["cpu_count"] >= 1
    assert env["command"].startswith("python ")
    assert len(env["load_average_at_start"]) == 3 and len(env["load_average_at_end"]) == 3
    assert "no GPU" not in json.dumps(env)


def test_command_line_names_checkout_files_relative(monkeypatch):
    monkeypatch.setattr(sys, "argv", [str(ROOT / "benchmarks" / "x.py"), "--base",
                                      str(ROOT / ".cache" / "m.pt")])
    assert common.command_line() == "python benchmarks/x.py --base .cache/m.pt"


def test_repo_path_relative_and_refuses_outside(tmp_path):
    assert common.repo_path(ROOT / "benchmarks" / "common.py") == "benchmarks/common.py"
    with pytest.raises(ValueError, match="outside the repository"):
        common.repo_path("/usr/share/x.pt")


def test_write_result_refuses_absolute_checkout_path(tmp_path):
    bad = {"model": {"checkpoint": str(ROOT / ".cache" / "m.pt")}}
    with pytest.raises(ValueError, match="/model/checkpoint"):
        common.write_result("x.json", bad, results=tmp_path)
    assert not (tmp_path / "x.json").exists()
    path = common.write_result("x.json", {"model": {"checkpoint": ".cache/m.pt"}}, results=tmp_path)
    assert json.loads(path.read_text())["environment"]["git"]["commit"]


@pytest.mark.parametrize("path", RESULT_FILES, ids=lambda p: p.name)
def test_committed_results_name_no_machine_path_and_hold_no_prose(path):
    data = json.loads(path.read_text())
    text = path.read_text()
    assert "/work/" not in text and "/home/" not in text and "/root/" not in text

    def keys(o):
        if isinstance(o, dict):
            for k, v in o.items():
                yield k
                yield from keys(v)
        elif isinstance(o, list):
            for v in o:
                yield from keys(v)
    assert not {"note", "reading", "how"} & set(keys(data)), "prose belongs in benchmarks/README.md"
    assert data["environment"]["git"].keys() >= {"commit", "dirty"}


def test_no_carry_forward_of_hand_written_fields():
    for script in (ROOT / "benchmarks").glob("*.py"):
        assert "except ValueError:\n            pass" not in script.read_text(), script.name


def test_paired_recovery_ratio_and_interval():
    from fresh_maps import paired_recovery
    rng = np.random.default_rng(0)
    pa = 0.8 + 0.05 * rng.standard_normal(40)
    pa_nf = pa + 0.5 * (0.9 - pa) + 0.005 * rng.standard_normal(40)
    r = paired_recovery(0.9, pa.tolist(), pa_nf.tolist())
    gain, loss = pa_nf - pa, 0.9 - pa
    assert r["recovered_fraction"] == pytest.approx(gain.mean() / loss.mean())
    lo, hi = r["recovered_fraction_ci95"]
    assert lo < 0.5 < hi and hi - lo < 0.1
    assert r["recovery_points"]["ci95"][0] < gain.mean() < r["recovery_points"]["ci95"][1]
    with pytest.raises(ValueError, match="no accuracy lost"):
        paired_recovery(0.5, [0.6, 0.7], [0.6, 0.7])


def _result(name: str) -> dict:
    return json.loads((ROOT / "benchmarks" / "results" / name).read_text())


def test_readme_transcripts_quote_their_result_files():
    """The docs' ECC, bit-placement, vuln and SNN figures (once the README's, now the how-to
    guides') are the numbers in the JSONs that benchmarks/readme_figures.py wrote (issue 21, 9c):
    a re-run that changes them fails here until the guides are updated."""
    readme = "\n".join((ROOT / "docs" / "how-to" / f"{page}.md").read_text()
                       for page in ("protection", "snn-sparkxd"))
    ecc = _result("readme_ecc.json")["runs"]
    for run in ("plain", "secded72"):
        rows = [line for line in ecc[run]["table"] if line[:9].strip().replace(".", "").isdigit()]
        assert len(rows) == 5 and all(f"\n{row}\n" in readme for row in rows), run
    at = {p["voltage"]: p for p in ecc["secded13"]["points"]}
    assert f"`secded13` keeps {100 * at[0.825]['accuracy_mean']:.1f}% down to 0.825 and " \
           f"{100 * at[0.8]['accuracy_mean']:.1f}%" in readme.replace("\n", " ")

    placement = _result("readme_placement.json")["shipped"]
    lines = readme.splitlines()
    head = next(i for i, ln in enumerate(lines) if "linear (± CI95)" in ln)
    for i, line in enumerate(lines[head + 1:head + 5]):      # the three sweeps side by side
        lin, shu, skip = (placement[p]["points"][i] for p in ("linear", "shuffle", "skip-faulty-words"))
        want = [f"{lin['voltage']:g}", f"{lin['ber']:.3g}", f"{100 * lin['accuracy_mean']:.2f}%",
                f"({100 * lin['ci95']:.2f})", f"{100 * shu['accuracy_mean']:.2f}%",
                f"({100 * shu['ci95']:.2f})", f"{100 * skip['accuracy_mean']:.2f}%",
                f"({100 * skip['bit_placement']['skipped_share']:.1f}%"]
        got = line.replace("(", " (").replace("( ", "(").split()
        assert [w.rstrip(")") if w.endswith("%)") else w for w in got
                if w[0].isdigit() or w[0] == "("][:8] == want, line

    vuln = _result("readme_vuln.json")["runs"]
    sign = next(b for b in vuln["linear"]["bits"] if b["bit"] == 7)
    assert f"puts {sign['faulty_bits_mean']:,.0f} faulty sign bits per map and an " \
           f"{100 * sign['drop_mean']:.2f}-point drop" in readme.replace("\n", " ")

    for row in _result("readme_snn.json")["rows"]:
        line = next(ln for ln in readme.splitlines() if ln.startswith(f"| {row['model']} |"))
        assert f"| {100 * row['test_accuracy_8bit']:.2f}% | {100 * row['float_test_accuracy']:.2f}% |" in line


def test_bench_snn_smoke_tiny():
    """benchmarks/bench_snn.py end to end on tiny networks and random images: every workload has
    every variant, the engines agree with the step loop on the benchmark batch, the ratios the
    issue names exist. BindsNET is optional: a missing install is a recorded reason."""
    import bench_snn
    args = bench_snn.parse_args(["--synthetic", "--size", "16", "--steps", "3", "--batch", "6",
                                 "--train-batch", "6", "--conv-batch", "4", "--fc-n", "8",
                                 "--conv-n", "2", "--dc-n", "6", "--dc-steps", "8",
                                 "--dc-batch", "6", "--stdp-images", "12", "--rounds", "1",
                                 "--no-bindsnet"])
    r = bench_snn.run(args)
    for family in ("snn_fc", "snn_conv"):
        inf, train = r[family]["inference"], r[family]["training"]
        assert inf["equal_to_step_loop"] and train["gradients_match_step_loop"]
        for w in (inf, train):
            assert set(w["ms_per_image"]) == {"ours", "step_before", "step_reference", "floor"}
            assert all(v["wall_ms"] > 0 for v in w["ms_per_image"].values())
    assert r["diehl_cook"]["inference"]["equal_to_step_loop"]
    assert r["diehl_cook"]["stdp"]["equal_to_step_loop"]
    assert {"snn_fc8_inference", "snn_fc8_training", "snn_conv_inference",
            "diehl_cook6_inference"} <= set(r["ratios"])
    assert set(r["floor_ratios"]) >= {"snn_fc8_inference", "diehl_cook6_inference"}
    assert r["bindsnet"] == {"version": "0.3.4", "ran": False,
                             "unavailable_because": "skipped (--no-bindsnet)"}
    peer, why = bench_snn.load_bindsnet(ROOT / ".cache" / "no-such-dir")
    assert peer is None and "pip install --target .cache/bindsnet-pkgs" in why
