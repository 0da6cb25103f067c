"""`sramsim sparkxd` (sramsim.analysis.sparkxd): the study end to end on a tiny CNN, summary.json
written stage by stage, resume without retraining or re-measuring, and the one-line errors."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from sramsim.analysis import sparkxd as SX
from sramsim.commands.main import main

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# Tiny and fast: 200 images, 1-2 epochs, 1 map per BER, a 1024-row part (cheap whole-part maps).
FAST = ["--model", "cnn", "--limit", "200", "--epochs", "1", "--fat-epochs", "2", "--maps", "1",
        "--ber-range", "1e-4,1e-2", "--bisect", "1", "--dram-rows", "1024", "--no-progress"]


def strict_json(path):
    """The file as JSON, refusing NaN/Infinity (summary.json must be strict JSON)."""
    def refuse(token):
        raise ValueError(f"non-strict JSON token {token}")
    return json.loads(path.read_text(), parse_constant=refuse)


def test_study_runs_end_to_end_writes_each_stage_and_resumes(tmp_path, monkeypatch, capsys):
    out = tmp_path / "study"
    real_search = SX.__dict__.get("_tolerance")
    calls = []

    def interrupted(opts, model_path, folder, note, **kw):
        calls.append(folder.name)
        if folder.name == "tolerance-fat":
            raise KeyboardInterrupt
        return real_search(opts, model_path, folder, note, **kw)

    # 1. interrupted in the last stage: the first four are already in summary.json
    monkeypatch.setattr(SX, "_tolerance", interrupted)
    assert main(["sparkxd", *FAST, "--out", str(out)]) == 130
    s = strict_json(out / "summary.json")
    assert list(s["stages"]) == ["pretrain", "baseline", "tolerance_baseline", "fat"]
    assert s["complete"] is False and (out / "fat.pt").is_file()
    assert (out / "pretrained.pt").is_file() and (out / "baseline.pt").is_file()
    # the baseline is the equal-budget control: pretrained + as many clean epochs as FAT had
    base, fat = s["stages"]["baseline"], s["stages"]["fat"]
    assert base["control"] and base["epochs"] == 2 and base["init"] == fat["init"]
    assert base["init"] == s["stages"]["pretrain"]["checkpoint"]
    assert s["stages"]["fat"]["fat"]["ber"] == SX.DEFAULT_FAT_BER
    assert s["stages"]["fat"]["fat"]["source"] == "dram:error-model=0"
    assert s["search_error_model"] == 0
    monkeypatch.setattr(SX, "_tolerance", real_search)
    capsys.readouterr()

    # 2. resumed from the run file the interrupted run left (--config): nothing retrained, the
    # baseline curve reused, the FAT curve measured
    assert 'model = "cnn"' in (out / "run.toml").read_text()
    assert main(["sparkxd", "--config", str(out / "run.toml")]) == 0
    text = capsys.readouterr().out
    s = strict_json(out / "summary.json")
    st = s["stages"]
    assert st["pretrain"]["skipped"] and st["baseline"]["skipped"] and st["fat"]["skipped"]
    assert st["tolerance_baseline"]["skipped"] and st["tolerance_baseline"]["computed_maps"] == 0
    assert not st["tolerance_fat"]["skipped"] and st["tolerance_fat"]["computed_maps"] > 0
    assert s["complete"] is True and (out / "sparkxd.png").stat().st_size > 10_000
    # the reference rule: the FAT arm's headline search is judged against the control's clean
    # accuracy (SparkXD), its second search against its own; the control against itself
    control_clean = st["tolerance_baseline"]["clean_accuracy"]
    assert st["tolerance_baseline"]["reference"]["kind"] == "own-clean"
    assert st["tolerance_fat"]["reference"] == {
        "kind": "given", "label": "control cnn clean accuracy", "accuracy": control_clean}
    assert st["tolerance_fat_own"]["reference"]["kind"] == "own-clean"
    assert st["tolerance_fat_own"]["reference"]["accuracy"] == st["tolerance_fat"]["clean_accuracy"]
    for key in ("tolerance_fat", "tolerance_fat_own"):
        target = st[key]["reference"]["accuracy"] - st[key]["margin"]
        for p in st[key]["points"]:
            assert p["passes"] == (p["accuracy_mean"] >= target - 1e-12)
    r = s["results"]
    assert r["reference"]["accuracy"] == control_clean and r["reference"]["kind"] == "given"
    assert r["fat"]["common"]["tolerable_ber"] == st["tolerance_fat"]["tolerable_ber"]
    assert r["fat"]["own"]["tolerable_ber"] == st["tolerance_fat_own"]["tolerable_ber"]
    if r["baseline"]["tolerable_ber"]:
        assert r["fat_over_control_common"] == pytest.approx(
            (r["fat"]["common"]["tolerable_ber"] or 0) / r["baseline"]["tolerable_ber"])
        assert r["fat_over_control_own"] == pytest.approx(
            (r["fat"]["own"]["tolerable_ber"] or 0) / r["baseline"]["tolerable_ber"])
    for name in ("baseline", "fat"):
        tol = st[f"tolerance_{name}"]
        assert tol["maps"] == 1 and tol["faults"]["source"] == "dram"
        assert tol["faults"]["mapping"] == "drmap" and tol["faults"]["geometry"] == {"rows": 1024}
        grid = [p["ber"] for p in tol["points"] if p["phase"] == "grid"]
        assert grid == pytest.approx([1e-4, 1e-3, 1e-2][:len(grid)])
        assert set(s["results"][name]) >= {"tolerable_ber", "voltage", "clean_accuracy"}
    r = s["results"]
    assert set(r["energy_per_inference"]) == {"naive", "drmap", "error-aware"}
    e = r["energy_per_inference"]
    h = r["headline"]
    assert h["baseline_naive_at_nominal_J"] == e["naive"]["nominal_J"] > 0
    if r["fat"]["voltage"] is not None:
        assert h["fat_drmap_at_fat_tolerable_J"] == e["drmap"]["fat_tolerable_J"]
        assert h["saving"] == pytest.approx(1 - e["drmap"]["fat_tolerable_J"] /
                                            e["naive"]["nominal_J"])
        assert 0 < h["saving"] < 1
    assert r["tolerable_ber_ratio"] == r["fat_over_control_common"]
    assert s["paper"]["sparkxd"]["dram_energy_saving_mean"] == 0.40
    assert r["baseline_is_control"] is True
    assert "tolerable BER" in text and "SparkXD reports ~40%" in text
    assert "pretrained model + 2 clean epochs" in text

    # 3. finished: every stage reused
    assert main(["sparkxd", *FAST, "--out", str(out), "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert all(again["stages"][k]["skipped"] for k in SX.STAGES)
    assert again["stages"]["tolerance_fat"]["computed_maps"] == 0
    assert again["results"] == s["results"]


def test_given_base_is_pretrained_model_of_both_arms(tmp_path, cnn_checkpoint, monkeypatch):
    path, _ = cnn_checkpoint
    trained = []
    from sramsim.nn import training
    real = training.train_base

    def spy(arch, data, out, opts, **kw):
        trained.append((Path(out).name, str(kw.get("init")), opts.epochs, opts.fat_ber))
        return real(arch, data, out, opts, **kw)

    monkeypatch.setattr(training, "train_base", spy)

    class Stop(Exception):
        pass

    def stop(*a):
        raise Stop

    monkeypatch.setattr(SX, "_tolerance", stop)
    out = tmp_path / "s"
    with pytest.raises(Stop):
        SX.run_study(SX.StudyOptions(out=str(out), model="cnn", base=str(path), limit=200,
                                     fat_epochs=1), progress=False)
    s = strict_json(out / "summary.json")
    assert s["stages"]["pretrain"]["given"] and s["stages"]["pretrain"]["checkpoint"] == str(path)
    # not retrained: only the clean control continues it before the first tolerance search
    assert trained == [("baseline.pt", str(path), 1, 0.0)]


def test_no_control_compares_against_the_pretrained_model(tmp_path, cnn_checkpoint,
                                                           monkeypatch):
    path, _ = cnn_checkpoint
    from sramsim.nn import training
    monkeypatch.setattr(training, "train_base", lambda *a, **k: pytest.fail("trained"))
    seen = []

    class Stop(Exception):
        pass

    def stop(opts, model_path, folder, note, **kw):
        seen.append(str(model_path))
        raise Stop

    monkeypatch.setattr(SX, "_tolerance", stop)
    out = tmp_path / "s"
    with pytest.raises(Stop):
        SX.run_study(SX.StudyOptions(out=str(out), model="cnn", base=str(path), limit=200,
                                     control=False), progress=False)
    base = strict_json(out / "summary.json")["stages"]["baseline"]
    assert base["control"] is False and base["checkpoint"] == str(path) and seen == [str(path)]


@pytest.mark.parametrize("extra, message", [
    (["--margin", "0"], "--margin"),
    (["--margin", "1.5"], "--margin"),
    (["--margin", "x"], "--margin"),
    (["--maps", "0"], "--maps"),
    (["--model", "snn-xx"], "--model"),
    (["--fat-ber", "2"], "--fat-ber"),
    (["--fat-ber", "0"], "--fat-ber"),
    (["--fat-source", "dram:model9"], "--fat-source"),
    (["--fat-curriculum", "steps"], "--fat-curriculum"),
    (["--epochs", "0"], "--epochs"),
    (["--limit", "1"], "--limit"),
    (["--ber-range", "1e-2,1e-4"], "--ber-range"),
    (["--dram-rows", "100"], "rows"),
    (["--seed", "-1"], "--seed"),
])
def test_bad_options_are_one_line_errors(tmp_path, capsys, monkeypatch, extra, message):
    from sramsim.nn import training
    monkeypatch.setattr(training, "train_base", lambda *a, **k: pytest.fail("trained"))
    assert main(["sparkxd", "--out", str(tmp_path / "s"), "--no-progress", *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err


def test_unwritable_out_is_refused_before_training(tmp_path, capsys, monkeypatch):
    from sramsim.nn import training
    monkeypatch.setattr(training, "train_base", lambda *a, **k: pytest.fail("trained"))
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["sparkxd", "--model", "cnn", "--out", str(blocker / "study"),
                 "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--out" in err and "not a directory" in err
    assert main(["sparkxd", "--model", "cnn", "--out", str(blocker), "--no-progress"]) == 2
    assert "--out" in capsys.readouterr().err


def test_bad_base_is_refused(tmp_path, capsys, cnn_checkpoint, monkeypatch):
    from sramsim.nn import training
    monkeypatch.setattr(training, "train_base", lambda *a, **k: pytest.fail("trained"))
    path, _ = cnn_checkpoint
    junk = tmp_path / "junk.pt"
    junk.write_text("not a checkpoint")
    cases = [(["--base", str(tmp_path / "missing.pt")], "no such checkpoint"),
             (["--base", str(junk)], "--base"),
             (["--base", str(path), "--data", "mnist"], "trained on 'fashion-mnist'"),
             (["--base", str(path), "--model", "vgg11"], "not the vgg11 asked for")]
    for extra, message in cases:
        assert main(["sparkxd", "--out", str(tmp_path / "s"), "--no-progress", *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err, (extra, err)


def test_search_error_model_follows_the_fat_source():
    assert SX.StudyOptions(out="x", fat_source="dram:error-model=2").search_error_model() == 2
    assert SX.StudyOptions(out="x", fat_source="dram:model2").search_error_model() == 2
    assert SX.StudyOptions(out="x", fat_source="random").search_error_model() == 0
    assert SX.StudyOptions(out="x", fat_source="dram:model2",
                           error_model=1).search_error_model() == 1


def test_recipe_choice_rule_uses_validation_numbers_only():
    rows = [{"clean_accuracy": 0.80, "tolerable_ber": 1e-2},     # best BER but 2 points low
            {"clean_accuracy": 0.815, "tolerable_ber": 3e-3},
            {"clean_accuracy": 0.82, "tolerable_ber": 3e-3}]     # tie on BER: higher clean wins
    best, why = SX.choose(0.82, 0.01, rows)
    assert best == 2 and "within the margin" in why
    best, why = SX.choose(0.90, 0.01, rows)
    assert best == 0 and "no candidate" in why
    rows[2]["tolerable_ber"] = None                               # none tolerated: counts as 0
    assert SX.choose(0.82, 0.01, rows)[0] == 1


def test_candidates_need_held_out_images_and_known_keys(tmp_path):
    base = dict(out=str(tmp_path / "s"), model="cnn", limit=200)
    with pytest.raises(SX.InputError, match="val_images"):
        SX.check(SX.StudyOptions(**base, candidates=[{"fat_loss": "faulty"}]))
    with pytest.raises(SX.InputError, match="unknown recipe keys"):
        SX.check(SX.StudyOptions(**base, val_images=50, candidates=[{"lr": 1}]))
    with pytest.raises(SX.InputError, match="clip"):
        SX.check(SX.StudyOptions(**base, val_images=50, candidates=[{"clip": -1.0}]))
    with pytest.raises(SX.InputError, match="limit"):
        SX.check(SX.StudyOptions(out=str(tmp_path / "s"), model="cnn", val_images=50))
    with pytest.raises(SX.InputError, match="maps_max"):
        SX.check(SX.StudyOptions(**base, maps=3, maps_max=2))


def test_candidates_are_chosen_on_held_out_training_images_and_validation_maps(tmp_path,
                                                                              monkeypatch):
    """select_recipe: every candidate trained, judged on the training split's last images with
    maps of the validation seed (never the test split), the choice recorded and used."""
    seen = []
    real = SX._tolerance

    def spy(opts, model_path, folder, note, **kw):
        seen.append((folder.name, kw.get("dataset"), kw.get("seed")))
        return real(opts, model_path, folder, note, **kw)

    cands = [{"fat_loss": "faulty", "fat_ber": 1e-2},
             {"fat_loss": "clean+faulty", "clip": 0.5, "fat_ber": 3e-2,
              "fat_curriculum": "log-uniform", "fat_start": 1e-4}]
    opts = SX.StudyOptions(out=str(tmp_path / "s"), model="cnn", limit=200, val_images=100,
                           epochs=1, fat_epochs=1, maps=1, low=1e-4, high=1e-2, bisect_steps=0,
                           geometry={"rows": 1024}, candidates=cands)
    monkeypatch.setattr(SX, "_tolerance", spy)
    s = SX.run_study(opts, progress=False)
    sel = s["stages"]["fat"]["selection"]
    assert sel["data"].endswith("train[59900:60000]") and sel["n_images"] == 100
    assert sel["maps_seed"] == SX.VALIDATION_SEED_OFFSET
    validation = [x for x in seen if x[1] is not None]
    assert validation and all(d.name.endswith("train[59900:60000]") and seed == sel["maps_seed"]
                              for _, d, seed in validation)
    tests = [x for x in seen if x[1] is None]
    assert [f for f, _, _ in tests] == ["tolerance-baseline", "tolerance-fat", "tolerance-fat"]
    assert all(seed is None for _, _, seed in tests)          # the test maps: opts.seed
    assert len(sel["candidates"]) == 2 and sel["chosen"] in (0, 1)
    chosen = sel["candidates"][sel["chosen"]]
    assert s["stages"]["fat"]["checkpoint"] == chosen["checkpoint"]
    assert s["stages"]["fat"]["fat"]["loss"] == chosen["recipe"]["fat_loss"]
    assert s["stages"]["fat"]["clip"] == chosen["recipe"]["clip"]
    for row in sel["candidates"]:
        assert row["searched"] or row["skipped"]


def test_confirm_repeats_the_three_searches_on_the_whole_test_split_with_fresh_maps(
        tmp_path, monkeypatch):
    from sramsim.analysis import tolerance
    from sramsim.errors import InputError
    opts = SX.StudyOptions(out=str(tmp_path / "s"), model="cnn", limit=200, eval_limit=100)
    stages = {"baseline": {"checkpoint": str(tmp_path / "s" / "baseline.pt"), "control": True},
              "fat": {"checkpoint": str(tmp_path / "s" / "fat.pt")}}

    def record(clean: float, tolerable: float) -> dict:
        point = {"ber": tolerable, "n": 3, "accuracy_mean": clean - 0.005, "ci95": 0.002}
        return {"clean_accuracy": clean, "n_samples": 10_000, "tolerable_ber": tolerable,
                "voltage": 1.1, "accuracy_mean": clean - 0.005, "first_failing_ber": None,
                "bound": None, "reference": {"kind": "own-clean", "label": "own clean accuracy",
                                             "accuracy": clean},
                "margin": 0.01, "nominal_voltage": 1.2, "points": [point], "energy": {}}
    seen = []

    def search(opts_, model_path, folder, note, **kw):
        seen.append((model_path.name, folder.relative_to(tmp_path).as_posix(), kw))
        return record(0.8, 1e-3) if model_path.name == "baseline.pt" else record(0.79, 4e-3)

    real_tolerance = SX._tolerance
    monkeypatch.setattr(SX, "_tolerance", search)
    r = SX.confirm(opts, stages, tmp_path / "c", seed=1)
    names = [(m, f) for m, f, _ in seen]
    assert names == [("baseline.pt", "c/tolerance-baseline"), ("fat.pt", "c/tolerance-fat"),
                     ("fat.pt", "c/tolerance-fat")]
    assert all(kw["seed"] == 1 and kw["whole_test"] for _, _, kw in seen)
    # the FAT model's first search is judged against the control's clean accuracy there
    assert seen[1][2]["reference"].accuracy == 0.8 and "reference" not in seen[2][2]
    assert r["fat_over_control_common"] == pytest.approx(4.0)
    with pytest.raises(InputError, match="other than the study's test-map seed 0"):
        SX.confirm(opts, stages, tmp_path / "c", seed=0)
    with pytest.raises(InputError, match="not trained its fat model"):
        SX.confirm(opts, {"baseline": stages["baseline"]}, tmp_path / "c", seed=1)

    # whole_test: the search gets every test sample (limit None), the study's eval_limit else
    class Stop(Exception):
        pass

    limits = []

    def stop(*a, **kw):
        limits.append(kw["limit"])
        raise Stop

    monkeypatch.setattr(SX, "_tolerance", real_tolerance)
    monkeypatch.setattr(tolerance, "search", stop)
    for whole in (True, False):
        with pytest.raises(Stop):
            SX._tolerance(opts, tmp_path / "m.pt", tmp_path / "t", print, whole_test=whole)
    assert limits == [None, 100]
