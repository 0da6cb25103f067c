"""Why Diehl & Cook N400 lost accuracy with more STDP training, and the recipe that keeps it
learning (issue 22, item 4), chosen on held-out *training* images only.

One epoch over training images 0..58,999 at batch 64 (`sramsim.nn.stdp`'s semantics: the same
order and encoding streams for every recipe); after 5k, 10k, 20k, ... images the neurons are
labelled on the first 10,000 training images and the accuracy is measured on training images
59,000..59,999, which no recipe trains on. The test split is never read. Recipes
(`DiehlCook.set_recipe`): BindsNET's defaults (128 Hz, theta on the batched time base), the
paper's input rate (64 Hz), the online theta time base (each image followed by 150 ms of rest),
and both.

    .venv/bin/python benchmarks/stdp_recipe.py [--recipes default,rate64,rest150,rate64+rest150]
        [--images 59000] [--out stdp_recipe]

Writes benchmarks/results/<out>.json (rows per recipe and checkpoint: held-out accuracy, spikes
per image, theta's mean and max) as each recipe finishes.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402

from sramsim.nn.data import load_dataset  # noqa: E402
from sramsim.nn.models import build  # noqa: E402
from sramsim.nn.models.diehl_cook import PAPER_REST_MS, class_scores  # noqa: E402
from sramsim.nn.snn_engine.encoding import key_from_seed  # noqa: E402
from sramsim.nn.stdp import apply_update, assign_labels, encoding_seed, order_seed  # noqa: E402

RECIPES = {"default": {}, "rate64": {"intensity": 64.0},
           "rest150": {"theta_rest_ms": PAPER_REST_MS},
           "rate64+rest150": {"intensity": 64.0, "theta_rest_ms": PAPER_REST_MS}}
HELD_OUT = (59_000, 60_000)
ASSIGN = 10_000
CHECKS = (5_000, 10_000, 20_000, 30_000, 40_000, 50_000)


def held_out_accuracy(model, data) -> tuple[float, float]:
    """(accuracy on the held-out training images, their spikes per image), labels from the
    first ASSIGN training images (eval mode, float weights)."""
    model.eval()
    with torch.no_grad():
        counts = torch.cat([model.spike_counts(data.x[a:a + 1000]) for a in range(0, ASSIGN, 1000)])
        assignments = assign_labels(counts, data.y[:ASSIGN], model.num_classes)
        held = model.spike_counts(data.x[HELD_OUT[0]:HELD_OUT[1]])
        pred = class_scores(held, assignments, model.num_classes).argmax(1)
        acc = float((pred == data.y[HELD_OUT[0]:HELD_OUT[1]]).double().mean())
    model.train()
    return acc, float(held.sum(1).mean())


def one_recipe(name: str, data, images: int, batch: int, seed: int) -> list[dict]:
    """Train N400 from seed `seed` with recipe `name`; a row per checkpoint."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build("diehl-cook400")
    model.set_recipe(**RECIPES[name])
    perm = torch.randperm(images, generator=torch.Generator().manual_seed(order_seed(seed, 0)))
    checks = sorted({c for c in CHECKS if c < images} | {images})
    rows, spikes, t0 = [], 0.0, time.perf_counter()
    model.train()
    for step, a in enumerate(range(0, images, batch)):
        b = min(a + batch, images)
        key = key_from_seed(encoding_seed(seed, 0, step))
        with torch.no_grad():
            rec = model.run(data.x[perm[a:b]], learn=True, key=key)
            apply_update(model, rec.delta_w)
            model.rest_decay_(b - a)
        spikes += rec.total()
        if any(a < c <= b for c in checks):
            acc, held_spikes = held_out_accuracy(model, data)
            rows.append({"recipe": name, "images": b, "held_out_accuracy": acc,
                         "held_out_spikes_per_image": held_spikes,
                         "train_spikes_per_image": spikes / b,
                         "theta_mean_mV": float(model.theta.mean()),
                         "theta_max_mV": float(model.theta.max()),
                         "seconds": round(time.perf_counter() - t0, 1)})
            print(name, rows[-1], flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--recipes", default=",".join(RECIPES))
    ap.add_argument("--images", type=int, default=HELD_OUT[0])
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="stdp_recipe")
    args = ap.parse_args()
    names = [r for r in args.recipes.split(",") if r]
    unknown = [r for r in names if r not in RECIPES]
    if unknown or not 1 <= args.images <= HELD_OUT[0]:
        sys.exit(f"--recipes: one of {', '.join(RECIPES)}; --images in 1..{HELD_OUT[0]}")
    torch.set_num_threads(args.threads)
    data = load_dataset("fashion-mnist", "train")
    result = {"model": "diehl-cook400", "batch_size": args.batch_size,
              "images": args.images, "held_out_train_images": list(HELD_OUT),
              "assignment_images": ASSIGN, "recipes": {k: RECIPES[k] for k in names}, "rows": []}
    for name in names:
        result["rows"] += one_recipe(name, data, args.images, args.batch_size, args.seed)
        write_result(f"{args.out}.json", result)


if __name__ == "__main__":
    main()
