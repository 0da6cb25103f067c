"""benchmarks/stutz_highber.py: selection on validation only, the shape verdict, and a tiny run
end to end (every field the README quotes is in the JSON; a re-run resumes without retraining)."""
import json
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import stutz_highber as S  # noqa: E402


def _cand(key, rerr_at_select, clean=0.1):
    return {"key": key, "validation": {"0.0": S.summary([clean]),
                                       str(S.SELECT_P): S.summary(rerr_at_select)}}


def test_choose_ranks_by_validation_rerr_at_select_p():
    cands = [_cand("a", [0.30, 0.32]), _cand("b", [0.20, 0.28]), _cand("c", [0.23, 0.23])]
    assert S.choose(cands)["key"] == "c"          # mean 0.23 < 0.24 < 0.31
    assert S.choose([_cand("x", [0.2, 0.2]), _cand("y", [0.2, 0.2])])["key"] == "x"


def test_summary_interval_and_shape_verdict():
    s = S.summary([0.1, 0.2, 0.3])
    assert s["rerr_mean"] == pytest.approx(0.2) and s["maps"] == 3
    assert s["ci95"] == pytest.approx(4.302653 * 0.1 / 3 ** 0.5, rel=1e-5)

    def rows(clean, at5, at10):
        return {"0.0": {"rerr_mean": clean}, "0.05": {"rerr_mean": at5}, "0.1": {"rerr_mean": at10}}
    table = {"Normal": rows(0.09, 0.85, 0.9), "Normal-RQ-GN": rows(0.09, 0.6, 0.9),
             "Clipping": rows(0.095, 0.1, 0.12), "RandBET": rows(0.10, 0.11, 0.14)}
    v = S.shape_check(table)
    assert v["Clipping_robust"]["points_above_clean_at_robust_p"] == pytest.approx(2.5)
    assert v["Clipping_robust"]["holds"] and not v["RandBET_robust"]["holds"]   # 4 points > 3
    assert not v["reproduced"]
    table["RandBET"] = rows(0.10, 0.11, 0.12)
    assert S.shape_check(table)["reproduced"]
    table["Normal"] = rows(0.09, 0.3, 0.9)                                     # no collapse
    assert not S.shape_check(table)["reproduced"]


def test_tiny_run_end_to_end_and_resume(tmp_path, monkeypatch):
    before = torch.get_num_threads()
    cache, out = tmp_path / "cache", tmp_path / "res" / "stutz.json"
    argv = ["--limit", "64", "--epochs", "2", "--maps", "2", "--val-maps", "2",
            "--cache", str(cache), "--out", str(out)]
    try:
        assert S.main(argv) == 0
        result = json.loads(out.read_text())
        assert out.with_suffix(".png").exists()
        assert result["table"].keys() == set(S.METHOD_ORDER)
        for rows in result["table"].values():
            assert [float(p) for p in rows] == S.TEST_PS
            assert rows["0.0"]["maps"] == 1 and rows["0.1"]["maps"] == 2
        chosen = result["validation"]["chosen"]
        for kind, name in (("clipping", "Clipping"), ("randbet", "RandBET")):
            best = S.choose(result["validation"][kind])
            assert chosen[name] == best["key"] == result["models"][name]["trained_as"]
            assert (cache / f"{name.lower()}.pt").exists()
        assert result["models"]["RandBET"]["randbet_grad_clip"] == S.RANDBET_GRAD_CLIP
        assert all(b["epochs"] == 2 and b["train_cpu_s"] > 0 for b in result["budget"].values())
        lines = (cache / "points.jsonl").read_text().count("\n")
        stamps = {p.name: p.stat().st_mtime_ns for p in cache.glob("*.pt")
                  if p.name not in ("clipping.pt", "randbet.pt")}
        assert S.main(argv) == 0                  # everything cached: no training, no evaluation
        assert (cache / "points.jsonl").read_text().count("\n") == lines
        assert stamps == {p.name: p.stat().st_mtime_ns for p in cache.glob("*.pt")
                          if p.name not in ("clipping.pt", "randbet.pt")}
        assert json.loads(out.read_text())["table"] == result["table"]
    finally:
        torch.set_num_threads(before)
