"""The result tables of the Reproductions and How-to pages, rendered from benchmarks/results/*.json.

Each function returns one Markdown table (no prose: readings are written in the pages). The numbers
are the JSONs' own, formatted; a JSON that lacks a field fails the docs build with a KeyError
naming it, so a changed benchmark cannot leave a stale table behind.
"""
from __future__ import annotations

import json
from functools import cache
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"


@cache
def load(name: str) -> dict:
    """benchmarks/results/NAME.json."""
    return json.loads((RESULTS / f"{name}.json").read_text())


def pct(x: float | None, digits: int = 1) -> str:
    """A fraction as a percentage ("-" for None)."""
    return "-" if x is None else f"{100 * x:.{digits}f}%"


def acc(x: float) -> str:
    """An accuracy with as many of two decimals as it has (0.888 -> 88.8%, 0.8875 -> 88.75%)."""
    return f"{round(100 * x, 2):g}%"


def ber(x: float) -> str:
    """A bit error rate in percent, two significant digits (0.00127 -> 0.13%)."""
    return f"{100 * x:.2g}%"


def table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def interval(record: dict, digits: int = 1) -> str:
    """A {"mean", "ci95": [low, high]} record as "mean [low, high]" in percent."""
    low, high = record["ci95"]
    return f"{100 * record['mean']:.{digits}f}% [{100 * low:.{digits}f}, {100 * high:.{digits}f}]"


# ------------------------------------------------------------------------------ NeuralFuse

def neuralfuse_fresh() -> str:
    """The chosen generators on fresh fault maps (neuralfuse_fresh.json), both BERs."""
    d = load("neuralfuse_fresh")
    rows = []
    for rate, h in d["headline_fresh_maps"].items():
        old = d["same_10_old_maps"][rate]
        low, high = h["recovered_fraction_ci95"]
        rows.append([pct(float(rate), 0), f"{pct(h['ca'], 2)} / {pct(h['ca_nf'], 2)}",
                     interval(h["pa"]), interval(h["pa_nf"]),
                     f"**{pct(h['recovered_fraction'])}** [{100 * low:.1f}, {100 * high:.1f}] "
                     f"({pct(old['recovered_fraction'])})",
                     f"{pct(h['energy_saving_base'])} -> {pct(h['energy_saving'])}"])
    first = next(iter(d["headline_fresh_maps"].values()))
    return table(["BER", "clean / with G", "PA (95% CI)", "PA with G (95% CI)",
                  f"lost accuracy recovered ({first['maps']} maps; old 10 maps)",
                  "memory-energy saving without -> with G"], rows)


def neuralfuse_counts() -> str:
    """NeuralFuse's published weight-read counts beside the closed-form systolic count."""
    from fusion.generators import build as build_generator
    from sramsim.analysis import energy as E
    from sramsim.analysis import systolic as S
    from sramsim.nn.models import build as build_model
    rows = []
    for name, published in E.PUBLISHED_ACCESSES.items():
        model = (build_model(name.lower(), 3, 10) if name in ("ResNet18", "VGG19")
                 else build_generator(name, 3))
        ours = S.count_accesses(model, (3, 32, 32), "systolic")
        same = "yes" if ours == published else f"no ({100 * (ours / published - 1):+.1f}%)"
        rows.append([name, f"{published:,}", f"{ours:,}", same])
    return table(["model (CIFAR-10, 3x32x32)", "NeuralFuse's count", "ours (`--count systolic`)",
                  "equal"], rows)


# ------------------------------------------------------------------------------ Stutz et al.

STUTZ_NAMES = {"Normal": "Normal (symmetric, BatchNorm)", "Normal-RQ-GN": "RQuant + GroupNorm"}


def _stutz_name(key: str, model: dict) -> str:
    if key in STUTZ_NAMES:
        return STUTZ_NAMES[key]
    if key == "Clipping":
        return f"Clipping (w_max {model['w_max']:g})"
    return f"RandBET (w_max {model['w_max']:g}, trained at p = {model['p_train']:.0%})"


def stutz_highber() -> str:
    """RErr (%) under random bit errors: ours on Fashion-MNIST / theirs on MNIST where published."""
    d = load("stutz_highber")
    ps = d["settings"]["test_ps"]
    published = d["published"]["rerr_percent"]
    header = ["model"] + ["clean" if p == 0 else f"p = {100 * p:g}%" for p in ps]
    rows = []
    for key, per_p in d["table"].items():
        theirs = published.get(key, {})
        row = [_stutz_name(key, d["models"][key])]
        for p in ps:
            ours = f"{100 * per_p[str(float(p))]['rerr_mean']:.2f}"
            paper = theirs.get("0" if p == 0 else f"{p:g}")
            row.append(ours if paper is None else f"{ours} / {paper:g}")
        rows.append(row)
    return table(header, rows)


def stutz_chips() -> str:
    """The high-BER hardened models on the shipped chips: the voltage each buys."""
    d = load("stutz_chips")
    rows = []
    for key, m in d["models"].items():
        own, normal = m["lowest_within_own_clean"], m["lowest_within_normal_clean"]
        rows.append([key if key != "Normal-RQ-GN" else "RQuant + GroupNorm",
                     pct(m["clean_accuracy"], 2),
                     "never" if own is None else f"{own['voltage']:g} (BER {ber(own['ber'])})",
                     "-" if own is None else pct(own["saving"]),
                     "never" if normal is None else f"{normal['voltage']:g} V"])
    return table(["model (stutz_highber.py)", "clean", "lowest V within 1 point of own clean",
                  "saving there", "within 1 point of Normal's clean"], rows)


# ------------------------------------------------------------------------------ protection

def _training(method: dict, first_with_model: str, name: str) -> str:
    """How a method's model was made: CPU s + knob-search wall s, or which row it shares."""
    if first_with_model == "none" and method["generator"] is None:
        return "none" + ("; needs the chip's map" if method["protection"] and
                         "bit_placement" in method["protection"] else "")
    if first_with_model != name:
        return f"as {first_with_model}"
    return f"{method['train_cpu_s']:.0f} + {method['knob_search_wall_s']:.0f}"


def equal_energy() -> str:
    """Every mitigation at its lowest voltage within 1 point of its own and the unprotected clean
    accuracy, with the net saving after its own costs (equal_energy.json)."""
    d = load("equal_energy")
    archs = list(d["models"])
    names = list(d["models"][archs[0]]["methods"])
    header = ["method"] + [f"{a}: clean / lowest V / net saving" for a in archs] + \
             [f"training (CPU s + knob search wall s), {' / '.join(archs)}"]
    rows = []
    for name in names:
        row, training = [name], []
        for arch in archs:
            methods = d["models"][arch]["methods"]
            m = methods[name]
            key = json.dumps([m["model"], m["generator"] and m["generator"]["generator"]])
            first = next(n for n, o in methods.items()
                         if json.dumps([o["model"], o["generator"] and o["generator"]["generator"]])
                         == key)
            both = m["within_both"]
            if both is None:
                cell = f"{acc(m['clean_accuracy'])} / never"
            else:
                net, gross = both["net_saving"], both["saving_before_extra"]
                extra = "" if abs(net - gross) < 1e-9 else f" ({pct(gross)} before its costs)"
                cell = f"{acc(m['clean_accuracy'])} / {both['voltage']:g} / {pct(net)}{extra}"
            row.append(cell)
            training.append(_training(m, first, name))
        rows.append(row + [" / ".join(training)])
    return table(header, rows)


# ------------------------------------------------------------------------------ SparkXD

def sparkxd() -> str:
    """The SparkXD study per model (sparkxd.json) under the common reference (the control's
    clean accuracy), own-clean beside it, next to SparkXD's and EDEN's figures."""
    d = load("sparkxd")
    models = d["models"]
    paper = d["paper"]

    def per(f) -> list[str]:
        return [f(m) for m in models]

    def tol(op: dict, volts: bool = True) -> str:
        # ">=": the model passed the highest BER scanned (the search's bound)
        b, v = op["tolerable_ber"], op["voltage"]
        if b is None:
            return "none (below the lowest BER scanned)"
        at_top = (op["bound"] or "").startswith("at the highest")
        return (">= " if at_top else "") + f"{b:.2e}" + (f" ({v:.3f} V)" if volts else "")

    def at(op: dict) -> str:
        if op["accuracy_mean"] is None:
            return "-"
        return f"{100 * op['accuracy_mean']:.2f} ± {100 * op['ci95']:.2f} ({op['n_at_tolerable']})"

    def nxt(op: dict) -> str:
        g = op["next_grid_point"]
        return "-" if g is None else (f"{g['ber']:.0e}: {100 * g['accuracy_mean']:.2f} ± "
                                      f"{100 * g['ci95']:.2f} ({g['n']})")

    def ratio(x: float | None, m: dict) -> str:
        # the control passed the highest BER scanned: its tolerable BER is a lower bound, so
        # FAT's ratio over it is an upper bound
        bounded = (arm(m, "baseline")["common"]["bound"] or "").startswith("at the highest")
        if x == 0:                  # FAT never within the reference, at any BER scanned
            return "**0 (never within)**"
        return "-" if x is None else f"**{'<= ' if bounded else ''}{x:.2f}x**"

    def arm(m: dict, name: str) -> dict:
        return m["results"][name]

    def whole(m: dict) -> dict | None:
        return m.get("whole_test_fresh_maps")

    rows = [
        ["8-bit weight bytes"] + per(lambda m: f"{m['weight_bytes']:,}") + ["-"],
        ["test images of the searches"] + per(lambda m: f"{m['clean_accuracy']['n_samples']:,}")
        + ["-"],
        ["control clean (= the common reference)"]
        + per(lambda m: pct(m["clean_accuracy"]["control"], 2)) + ["-"],
        ["FAT clean"] + per(lambda m: pct(m["clean_accuracy"]["fat"], 2)) + ["-"],
        ["control tolerable BER (V)"]
        + per(lambda m: tol(arm(m, "baseline")["common"])) + ["-"],
        ["  accuracy % there ± 95% (maps)"] + per(lambda m: at(arm(m, "baseline")["common"]))
        + ["-"],
        ["  next grid point"] + per(lambda m: nxt(arm(m, "baseline")["common"])) + ["-"],
        ["FAT tolerable BER, common reference (V)"]
        + per(lambda m: tol(arm(m, "fat")["common"])) + ["-"],
        ["  accuracy % there ± 95% (maps)"] + per(lambda m: at(arm(m, "fat")["common"])) + ["-"],
        ["  next grid point"] + per(lambda m: nxt(arm(m, "fat")["common"])) + ["-"],
        ["**FAT / control, common reference**"]
        + per(lambda m: ratio(m["fat_over_control_common"], m))
        + [f"~{paper['eden']['tolerable_ber_gain_from_curricular_retraining']:g}x (EDEN)"],
        ["FAT tolerable BER, own clean"] + per(lambda m: tol(arm(m, "fat")["own"], volts=False))
        + ["-"],
        ["FAT / control, own clean"] + per(lambda m: ratio(m["fat_over_control_own"], m))
        + ["-"],
        ["saving at the common reference (FAT, its V, drmap vs control, nominal, naive)"]
        + per(lambda m: f"**{pct(m['results']['headline']['saving'])}**")
        + [f"~{pct(paper['sparkxd']['dram_energy_saving_mean'], 0)} (SparkXD)"],
        ["saving of the control alone at its tolerable V"]
        + per(lambda m: pct(m["results"]["headline"]["control_saving"])) + ["-"],
        # the same searches on the whole test split with fresh maps (reproduce_sparkxd --confirm)
        ["whole test split, fresh maps: control / FAT clean"]
        + per(lambda m: "-" if not whole(m) else " / ".join(
            pct(whole(m)["clean_accuracy"][k], 2) for k in ("control", "fat"))) + ["-"],
        ["  FAT / control, common reference"]
        + per(lambda m: "-" if not whole(m) else ratio(whole(m)["fat_over_control_common"],
                                                        whole(m))) + ["-"],
        ["  FAT / control, own clean"]
        + per(lambda m: "-" if not whole(m) else ratio(whole(m)["fat_over_control_own"],
                                                        whole(m))) + ["-"],
        ["training s (pretrain / control / FAT chosen)"] + per(lambda m: " / ".join(
            "-" if m["train_seconds"][k] is None else f"{m['train_seconds'][k]:,.0f}"
            for k in ("pretrain", "baseline", "fat"))) + ["-"],
    ]
    return table(["", *[f"{m['model']}" for m in models], "published"], rows)


TABLES = {"neuralfuse-fresh": neuralfuse_fresh, "neuralfuse-counts": neuralfuse_counts,
          "stutz-highber": stutz_highber, "stutz-chips": stutz_chips,
          "equal-energy": equal_energy, "sparkxd": sparkxd}
