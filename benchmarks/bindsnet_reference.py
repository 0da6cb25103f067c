"""BindsNET's DiehlAndCook2015 trained the way the SparkXD study trains our Diehl & Cook networks,
as the reference for their accuracy (issue 22.4).

For each N of `reproduce_sparkxd.MODELS` (diehl-cook400, 900, 1600): BindsNET 0.3.4's network
(inh 120, exc 22.5, theta_plus 0.05, norm 78.4, dt 1 ms: its batched MNIST example) learns by its
own STDP rule from the study's training images (the first `limit` of Fashion-MNIST's training
split), T = 100 steps per presentation, batch 64, its own Poisson encoding at 128 Hz, one epoch
per stage the study trains (pretrain, then the control's epoch), in the order our trainer uses
(`sramsim.nn.stdp.order_seed(0, epoch)`). After each epoch, with learning off: each excitatory
neuron gets the class of its highest mean response on those training images
(`sramsim.nn.stdp.assign_labels`, the paper's rule, the same function ours uses), and the test
accuracy is measured on the whole test split (10,000 images) by the mean response of each class's
neurons (`class_scores`). Both evaluations present an image that drew fewer than 5 spikes again,
up to 5 times, at a rate raised by 32 Hz each time (the paper's rule, as ours does); BindsNET's
example presents each image once, recorded beside (`..._one_presentation`, unless
--no-one-presentation). BindsNET's weights
are float; ours are read as 8-bit codes.

Our figures beside it come from `benchmarks/results/sparkxd.json` (`test_accuracy_full_split`:
pretrain after the first epoch, baseline = the control after the second).

Resumable: the network state after each epoch is kept under benchmarks/.cache/bindsnet_ref/
(tensors only, read back with weights_only=True), the JSON rewritten after each model; the global
torch stream BindsNET draws its spikes from is seeded per epoch and per evaluation, so a resumed
run gives the same figures.
Run: `.venv/bin/python benchmarks/bindsnet_reference.py [--models diehl-cook400,...]
  [--threads T]` -> benchmarks/results/bindsnet_reference.json
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_snn import BINDSNET_VERSION, BindsNetDC, load_bindsnet  # noqa: E402
from common import RESULTS, ROOT, write_result  # noqa: E402
from reproduce_sparkxd import MODELS  # noqa: E402

from sramsim.nn.data import Dataset, load_dataset  # noqa: E402
from sramsim.nn.models import diehl_cook as D  # noqa: E402
from sramsim.nn.models.diehl_cook import DEFAULT_STEPS, class_scores  # noqa: E402
from sramsim.nn.snn_engine import encoding as E  # noqa: E402
from sramsim.nn.stdp import assign_labels, order_seed  # noqa: E402

CACHE = ROOT / "benchmarks" / ".cache" / "bindsnet_ref"
BATCH = 64
EVAL_BATCH = 250
STAGES = ("pretrain", "baseline")       # the study's two STDP epochs of the control


def counts_of(peer: Peer, x: torch.Tensor, retries: int = D.RETRIES) -> torch.Tensor:
    """(B, N) excitatory spike counts of `x`, learning off, in batches of EVAL_BATCH. As ours
    (`DiehlCook.spike_counts`, the paper's rule): an image that drew fewer than MIN_SPIKES
    spikes is presented again at a rate raised by INTENSITY_STEP, up to `retries` times, and its
    last presentation counts (retries=0: BindsNET's example, one presentation)."""
    out = []
    for a in range(0, len(x), EVAL_BATCH):
        xb = x[a:a + EVAL_BATCH]
        peer.present(xb, learn=False)
        counts = peer.monitor_counts
        for k in range(1, retries + 1):
            low = (counts.sum(1) < D.MIN_SPIKES).nonzero().squeeze(1)
            if low.numel() == 0:
                break
            peer.present(xb[low], learn=False,
                         intensity=D.INTENSITY + k * D.INTENSITY_STEP)
            counts[low] = peer.monitor_counts
        out.append(counts)
    return torch.cat(out)


class Peer(BindsNetDC):
    """BindsNetDC that keeps the last presentation's spike counts per image and neuron."""

    def present(self, x, learn: bool, encoded=None, intensity: float = D.INTENSITY):
        self.net.train(learn)
        inputs = (self.poisson(datum=E.intensity(x, "intensity") * intensity, time=self.steps,
                               dt=1.0) if encoded is None else encoded)
        self.net.run(inputs={"X": inputs}, time=self.steps)
        self.monitor_counts = self.monitor.get("s").sum(0).reshape(len(x), -1).float()
        self.net.reset_state_variables()

    def weight(self) -> torch.Tensor:
        """The input -> excitatory weights (the Weight feature of its connection's pipeline)."""
        return self.net.connections[("X", "Ae")].pipeline[0].value

    def state(self) -> dict:
        return {"w": self.weight().detach().clone(),
                "theta": self.net.layers["Ae"].theta.detach().clone()}

    def load(self, state: dict) -> None:
        with torch.no_grad():
            self.weight().copy_(state["w"])
            self.net.layers["Ae"].theta.copy_(state["theta"])


def labelled_accuracy(peer: Peer, x: torch.Tensor, y: torch.Tensor, test, seed: int,
                      retries: int = D.RETRIES) -> tuple[float, torch.Tensor]:
    """(test accuracy, test spike counts): the global torch stream seeded with `seed`, neurons
    labelled on (x, y), the test split classified by the mean response of each class's neurons
    (`retries`: see `counts_of`)."""
    torch.manual_seed(seed)                 # the same draws whether resumed or not
    assignments = assign_labels(counts_of(peer, x, retries), y, 10)
    test_counts = counts_of(peer, test.x, retries)
    pred = class_scores(test_counts, assignments, 10).argmax(1)
    return float((pred == test.y).double().mean()), test_counts


def ours(name: str) -> dict:
    path = RESULTS / "sparkxd.json"
    for m in json.loads(path.read_text())["models"]:
        if m["model"] == name:
            return m.get("test_accuracy_full_split", {})
    return {}


def run_model(bn, name: str, train, test, log, one_presentation: bool = True) -> dict:
    n = int(name.removeprefix("diehl-cook"))
    limit = MODELS[name]["limit"]
    x, y = train.x[:limit], train.y[:limit]
    torch.manual_seed(0)
    peer = Peer(bn, n, DEFAULT_STEPS, BATCH, tuple(x[0].shape))
    record = {"model": name, "neurons": n, "train_images": limit, "time_steps": DEFAULT_STEPS,
              "batch_size": BATCH, "test_images": len(test.x), "epochs": []}
    folder = CACHE / name
    folder.mkdir(parents=True, exist_ok=True)
    our_accuracy = ours(name)
    for epoch, stage in enumerate(STAGES):
        state_file = folder / f"epoch{epoch + 1}.pt"
        t0 = time.perf_counter()
        if state_file.exists():
            peer.load(torch.load(state_file, weights_only=True))
            trained = None
        else:
            torch.manual_seed(epoch)            # BindsNET's Poisson draws: the global stream
            perm = torch.randperm(limit, generator=torch.Generator().manual_seed(
                order_seed(0, epoch)))
            for a in range(0, limit, BATCH):
                peer.present(x[perm[a:a + BATCH]], learn=True)
            torch.save(peer.state(), state_file)
            trained = time.perf_counter() - t0
        t1 = time.perf_counter()
        acc, test_counts = labelled_accuracy(peer, x, y, test, 1000 + epoch)
        entry = {"epoch": epoch + 1, "stage": stage, "bindsnet_test_accuracy": acc,
                 "ours_test_accuracy": our_accuracy.get(stage),
                 "bindsnet_spikes_per_test_image": float(test_counts.sum(1).mean()),
                 "train_seconds": trained, "assign_and_test_seconds": time.perf_counter() - t1}
        if one_presentation:
            entry["bindsnet_test_accuracy_one_presentation"] = labelled_accuracy(
                peer, x, y, test, 2000 + epoch, retries=0)[0]
        if entry["ours_test_accuracy"] is not None:
            entry["ours_minus_bindsnet_points"] = 100 * (entry["ours_test_accuracy"] - acc)
        record["epochs"].append(entry)
        log(f"{name} epoch {epoch + 1} ({stage}): BindsNET {acc:.4f}, ours "
            f"{entry['ours_test_accuracy']} (train {trained} s)")
    return record


def batch_check(bn, train, test, images: int, batches: tuple[int, ...], log) -> list[dict]:
    """N400, one epoch on the first `images` training images, at each batch size: BindsNET and
    ours (`train_stdp`, 8-bit test accuracy), labelled on those images, tested on the whole test
    split. Whether batched learning, not the peer's setup, explains a gap at batch 64."""
    from sramsim.nn.models import build
    from sramsim.nn.stdp import quantized_test_accuracy, train_stdp
    from sramsim.nn.training import TrainOptions
    x, y = train.x[:images], train.y[:images]
    subset = Dataset(x, y, train.num_classes, train.name)
    rows = []
    for batch in batches:
        torch.manual_seed(0)
        peer = Peer(bn, 400, DEFAULT_STEPS, batch, tuple(x[0].shape))
        t0 = time.perf_counter()
        perm = torch.randperm(images, generator=torch.Generator().manual_seed(order_seed(0, 0)))
        for a in range(0, images, batch):
            peer.present(x[perm[a:a + batch]], learn=True)
        trained = time.perf_counter() - t0
        bindsnet_acc = labelled_accuracy(peer, x, y, test, 1000)[0]
        bindsnet_once = labelled_accuracy(peer, x, y, test, 2000, retries=0)[0]
        torch.manual_seed(0)
        model = build("diehl-cook400", 1, 10, image_size=tuple(x[0].shape[-2:]))
        opts = TrainOptions(epochs=1, batch_size=batch, seed=0)
        t1 = time.perf_counter()
        train_stdp(model, subset, opts, progress=False, log=None, assign_samples=images)
        ours_seconds = time.perf_counter() - t1
        ours_acc = quantized_test_accuracy(model, test, opts)
        rows.append({"batch_size": batch, "train_images": images,
                     "bindsnet_test_accuracy": bindsnet_acc,
                     "bindsnet_test_accuracy_one_presentation": bindsnet_once,
                     "ours_test_accuracy": ours_acc,
                     "bindsnet_train_seconds": trained, "ours_train_seconds": ours_seconds})
        log(f"batch check, batch {batch}: BindsNET {bindsnet_acc:.4f}, ours {ours_acc:.4f}")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="diehl-cook400,diehl-cook900,diehl-cook1600")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--no-one-presentation", action="store_true",
                    help="skip the evaluation with one presentation per image (BindsNET's "
                         "example; it doubles the evaluation time)")
    ap.add_argument("--batch-check", type=int, default=0, metavar="IMAGES",
                    help="also N400 on this many training images at each --batch-sizes, "
                         "BindsNET and ours (default 0: not run); rows of other image counts "
                         "or batch sizes already in the JSON are kept")
    ap.add_argument("--batch-sizes", default=f"1,{BATCH}",
                    help=f"batch sizes of --batch-check (default 1,{BATCH})")
    args = ap.parse_args()
    names = [m for m in args.models.split(",") if m]
    try:
        sizes = tuple(int(b) for b in args.batch_sizes.split(",") if b)
    except ValueError:
        ap.error(f"--batch-sizes must be whole numbers, got {args.batch_sizes!r}")
    if not sizes or min(sizes) < 1:
        ap.error(f"--batch-sizes must be whole numbers >= 1, got {args.batch_sizes!r}")
    bad = [m for m in names if m not in MODELS or not m.startswith("diehl-cook")]
    if bad:
        ap.error(f"--models: not a Diehl & Cook model of the study: {', '.join(bad)}")
    if args.threads is not None:
        if args.threads < 1:
            ap.error(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    bn, why = load_bindsnet()
    if bn is None:
        sys.exit(f"bindsnet_reference: BindsNET unavailable: {why}")
    train = load_dataset("fashion-mnist", "train")
    test = load_dataset("fashion-mnist", "test")
    out_name = "bindsnet_reference.json"
    previous = RESULTS / out_name
    done = {}
    if previous.exists():
        done = {m["model"]: m for m in json.loads(previous.read_text()).get("models", [])}
    if args.batch_check < 0 or args.batch_check > len(train):
        ap.error(f"--batch-check must be between 0 and {len(train)}, got {args.batch_check}")
    models = []
    check = None
    if previous.exists():
        check = json.loads(previous.read_text()).get("batch_check")

    def write() -> None:
        write_result(out_name, {"bindsnet": BINDSNET_VERSION,
                                "models": [done[k] for k in sorted(done, key=lambda k: int(
                                    k.removeprefix("diehl-cook")))], "batch_check": check})

    if args.batch_check:
        rows = batch_check(bn, train, test, args.batch_check, sizes,
                           lambda s: print(s, flush=True))
        new = {(r["train_images"], r["batch_size"]) for r in rows}
        kept = [r for r in check or [] if (r["train_images"], r["batch_size"]) not in new]
        check = sorted(kept + rows, key=lambda r: (r["train_images"], r["batch_size"]))
        if not names:
            write()
    for name in names:
        models.append(run_model(bn, name, train, test, lambda s: print(s, flush=True),
                                not args.no_one_presentation))
        done[name] = models[-1]
        write()


if __name__ == "__main__":
    main()
