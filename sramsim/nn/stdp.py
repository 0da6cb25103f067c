"""Unsupervised STDP training of a Diehl & Cook network, with the contract of
`sramsim.nn.training.train` (per-epoch records and state, exact resume, progress bar).

One epoch:
1. the training images in the order of `order_seed(seed, epoch)`, in batches of
   `opts.batch_size`, each batch presented for `model.time_steps` steps with the input encoding
   keyed by `encoding_seed(seed, epoch, step)`: the network integrates with the weights it would
   read from memory (the float weights; with FAT, `FaultInjector.weights(model, epoch, step)`,
   detached; with fat_loss "clean+faulty" once with each, `present`), and the STDP change of the
   presentation goes to the clean float weights, which are then clamped to [0, wmax] and
   normalised to sum 78.4 per neuron. Weight clipping (`opts.clip`) lowers wmax to the clip:
   STDP's own bound is the clipping of the synapses, so the stored weights (and the damage a
   high-bit error can do to one) stay below it.
2. label assignment: the first `assign_samples` training images (dataset order; images seen in
   training, never the test set) are presented with learning off and the clean quantized weights
   the accelerator holds; each neuron gets the class of its highest mean response (the paper's
   rule), neurons that never fired none (-1).
3. record {epoch, seconds, train_accuracy (on the assignment images, with those assignments),
   spikes_per_image, assign_samples, [fat_ber], [test_accuracy with the clean quantized
   weights]}, state written to state_path, log line, on_epoch_end.

Batched learning differs from the paper's one-image-at-a-time online learning: the B images of a
batch are presented in parallel with the same weights, their STDP changes are summed (BindsNET's
batch reduction) and applied once after the presentation, and theta rises by the spikes of all B
images (as BindsNET's batched nodes). With batch size 1 it is online learning per image, except
that within one presentation the weights stay fixed (the paper and BindsNET change them at every
step). The paper also re-presents an image with a higher rate when it caused fewer than 5 spikes
(not done while learning here) and rests 150 ms between images: the state is reset between
images, and theta's decay over those rests is the recipe's online time base (`stdp_rest_ms`).

Of the TrainOptions, STDP uses epochs, batch_size, seed, bits, scheme, clip, the FAT fields and
the recipe (stdp_intensity, stdp_rest_ms: `DiehlCook.set_recipe`, set on the model at the start);
the gradient-training ones (optimizer, lr, schedule, weight_decay) do not apply and RandBET is
refused. All randomness derives from (seed, epoch, step), so a run resumed from the per-epoch
state is bit-identical to an uninterrupted one.
"""
from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from sramsim.errors import InputError
from sramsim.inject.quantized_model import QuantizedModel, quantized_parameter_names
from sramsim.nn.data import Dataset
from sramsim.nn.evaluation import accuracy
from sramsim.nn.fat import FaultInjector
from sramsim.nn.models import atomic_torch_save, read_torch_file
from sramsim.nn.models.diehl_cook import WMAX, DiehlCook, Record, class_scores, normalize_
from sramsim.nn.snn_engine.encoding import key_from_seed

if TYPE_CHECKING:
    from sramsim.nn.training import TrainOptions

# `opts` is a sramsim.nn.training.TrainOptions; this module does not import training (training
# imports it to train diehl-cook models, and the layering allows no import circle).

STATE_FORMAT = "sramsim.stdp-state"
STATE_VERSION = 1
ASSIGN_SAMPLES = 10_000   # training images used to label the neurons after every epoch


def order_seed(seed: int, epoch: int) -> int:
    """Seed of the batch order of one epoch: the same (seed, 0, epoch) stream as
    `sramsim.nn.training.epoch_seed`, so STDP and gradient training visit the same order."""
    return int(np.random.SeedSequence((int(seed), 0, int(epoch))).generate_state(1)[0])


def encoding_seed(seed: int, epoch: int, step: int) -> int:
    """Seed of the input encoding of one STDP batch: stream 3, apart from training's RandBET (1)
    and FAT (2) streams."""
    return int(np.random.SeedSequence((int(seed), 3, int(epoch), int(step))).generate_state(1)[0])


def quantized_test_accuracy(model: DiehlCook, dataset: Dataset, opts: TrainOptions) -> float:
    """Accuracy with the clean quantized weights the accelerator would hold (as
    `sramsim.nn.training.quantized_accuracy`)."""
    qm = QuantizedModel(model, opts.bits, opts.scheme, opts.clip)
    return accuracy(model, dataset, qm.clean_weights(model.fc.weight.device))


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def assign_labels(counts: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Label of every neuron from its responses (B, N) to images of known `labels` (B,): the class
    with the highest mean spike count (Diehl & Cook 2015); -1 for a neuron that never fired.
    Classes absent from `labels` have mean 0; ties go to the lower class index."""
    counts, labels = counts.float(), labels.long().to(counts.device)
    onehot = torch.nn.functional.one_hot(labels, num_classes).float()       # (B, C)
    per_class = onehot.sum(0).clamp(min=1.0)
    rates = (onehot.t() @ counts) / per_class[:, None]                        # (C, N)
    out = rates.argmax(0)
    out[counts.sum(0) == 0] = -1
    return out


def apply_update(model: DiehlCook, delta_w: torch.Tensor, clip: float | None = None) -> None:
    """Add an STDP change to the float weights, clamp to [WMIN, WMAX] (or [WMIN, clip] when
    clipped: `opts.clip` is the synapses' upper bound), normalise per neuron."""
    with torch.no_grad():
        w = model.fc.weight
        w.add_(delta_w.to(w.dtype))
        normalize_(w, wmax=wmax_of(clip))


def wmax_of(clip: float | None) -> float:
    """The synapses' upper bound under weight clipping `clip` (None: WMAX)."""
    return WMAX if clip is None else min(WMAX, float(clip))


def present(model: DiehlCook, x: torch.Tensor, key: int, faulty: torch.Tensor | None,
            clean_and_faulty: bool) -> Record:
    """One learning presentation of the batch `x`: the Record whose STDP change is applied.

    With `faulty` weights the network integrates with them (theta adapts to the spikes they
    cause); with `clean_and_faulty` the batch is presented once with the clean and once with the
    faulty weights (same input spikes), and the change and theta's rise are the mean of both."""
    if faulty is None or not clean_and_faulty:
        return model.run(x, faulty, learn=True, key=key)
    theta0 = model.theta.clone()
    clean = model.run(x, None, learn=True, key=key)
    model.theta.copy_(theta0)
    rec = model.run(x, faulty, learn=True, key=key)
    assert clean.theta is not None and rec.theta is not None            # learn=True
    assert clean.delta_w is not None and rec.delta_w is not None
    model.theta.copy_(0.5 * (clean.theta + rec.theta))
    rec.delta_w = 0.5 * (clean.delta_w + rec.delta_w)
    return rec


def label_neurons(model: DiehlCook, dataset: Dataset, opts: TrainOptions,
                  samples: int = ASSIGN_SAMPLES, batch_size: int = 1000) -> dict:
    """Assign labels from the first `samples` images of `dataset` (eval mode, clean quantized
    weights); returns {"train_accuracy", "spikes_per_image", "assign_samples"}."""
    n = min(int(samples), len(dataset))
    device = model.fc.weight.device
    qm = QuantizedModel(model, opts.bits, opts.scheme, opts.clip)
    weight = qm.clean_weights(device)["fc.weight"]
    was_training = model.training
    model.eval()
    with torch.no_grad():
        counts = torch.cat([model.spike_counts(dataset.x[a:min(a + batch_size, n)].to(device),
                                               weight) for a in range(0, n, batch_size)])
    model.train(was_training)
    labels = dataset.y[:n].to(device)
    assignments = assign_labels(counts, labels, model.num_classes)
    model.assignments.copy_(assignments)
    pred = class_scores(counts, assignments, model.num_classes).argmax(1)
    return {"train_accuracy": float((pred == labels).double().mean()),
            "spikes_per_image": float(counts.sum(1).mean()), "assign_samples": n}


def train_stdp(model: DiehlCook, train_set: Dataset, opts: TrainOptions,
               test_set: Dataset | None = None, state_path: str | os.PathLike | None = None,
               tag: dict | None = None, progress: bool = True,
               log: Callable[[str], None] | None = _stderr,
               on_epoch_end: Callable[[int, dict], None] | None = None,
               assign_samples: int = ASSIGN_SAMPLES) -> list[dict]:
    """Train `model` in place by STDP; returns the per-epoch history (see the module docstring).

    state_path: after every epoch the model state (weights, theta, assignments) and the history
    are written there; if it exists when training starts (same `opts` and `tag`), training resumes
    after its last finished epoch. on_epoch_end(epoch, record) runs after each state write.
    """
    from sramsim.progress import progress as reporter

    if not isinstance(model, DiehlCook):
        raise InputError(f"STDP training needs a diehl-cook model, got {type(model).__name__}")
    if len(train_set) < 1:
        raise InputError(f"training set {train_set.name!r} is empty")
    if opts.randbet_p:
        raise InputError("randbet_p trains gradients on bit errors; a diehl-cook model learns "
                         "by STDP (use fat_ber for fault-aware STDP)")
    if opts.randbet_grad_clip is not None:
        raise InputError("randbet_grad_clip clamps a gradient; a diehl-cook model learns by STDP")
    model.set_recipe(opts.stdp_intensity, opts.stdp_rest_ms)
    names = quantized_parameter_names(model)
    device = model.fc.weight.device
    n = len(train_set)
    bounds = [(a, min(a + opts.batch_size, n)) for a in range(0, n, opts.batch_size)]
    config = {"options": opts.as_dict(), "tag": dict(tag or {}),
              "stdp": {"time_steps": model.time_steps, "inh": model.inh,
                       "assign_samples": int(assign_samples)}}
    injector = FaultInjector(model, names, opts)
    history: list[dict] = []
    start = 0
    if state_path is not None and Path(state_path).exists():
        start, history = _resume(state_path, config, model)
        if log and start < opts.epochs:
            log(f"resuming from {state_path} after epoch {start}/{opts.epochs}")
    for epoch in range(start, opts.epochs):
        t0 = time.perf_counter()
        model.train()
        order = torch.Generator().manual_seed(order_seed(opts.seed, epoch))
        perm = torch.randperm(n, generator=order)
        bar = reporter(bounds, desc=f"epoch {epoch + 1}/{opts.epochs}", unit="batch",
                       enabled=progress)
        spikes = 0.0
        for step, (a, b) in enumerate(bar):
            x = train_set.x[perm[a:b]].to(device)
            key = key_from_seed(encoding_seed(opts.seed, epoch, step))
            faulty = injector.weights(model, epoch, step)
            weight = None if faulty is None else faulty["fc.weight"].detach()
            with torch.no_grad():
                rec = present(model, x, key, weight, opts.fat_loss == "clean+faulty")
                assert rec.delta_w is not None          # learn=True
                apply_update(model, rec.delta_w, opts.clip)
                model.rest_decay_(b - a)
            spikes += rec.total()
            if step % 20 == 0:
                bar.set_postfix(spikes=f"{rec.total() / (b - a):.1f}")
        bar.close()
        record = {"epoch": epoch + 1, **label_neurons(model, train_set, opts, assign_samples),
                  "train_spikes_per_image": spikes / n}
        if injector.active:
            record["fat_ber"] = injector.ber(epoch)
        if test_set is not None:
            record["test_accuracy"] = quantized_test_accuracy(model, test_set, opts)
        record["seconds"] = time.perf_counter() - t0
        history.append(record)
        if state_path is not None:
            _save_state(state_path, config, epoch + 1, model, history)
        if log:
            test = (f", test accuracy {record['test_accuracy']:.4f}"
                    if "test_accuracy" in record else "")
            log(f"epoch {epoch + 1}/{opts.epochs}: assignment accuracy "
                f"{record['train_accuracy']:.4f} on {record['assign_samples']} training "
                f"images{test} ({record['seconds']:.1f} s)")
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1, record)
    model.eval()
    return history


def _save_state(path: str | os.PathLike, config: dict, epoch: int, model: DiehlCook,
                history: list[dict]) -> None:
    atomic_torch_save({"format": STATE_FORMAT, "version": STATE_VERSION, "config": config,
                       "epoch": epoch,
                       "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                       "history": history}, path)


def _resume(path: str | os.PathLike, config: dict, model: DiehlCook) -> tuple[int, list[dict]]:
    state = read_torch_file(path, STATE_FORMAT, STATE_VERSION, "sramsim STDP training state")
    if state.get("config") != config:
        raise InputError(f"{path}: training state was written with different options; delete it "
                         "to start over or choose another output")
    try:
        model.load_state_dict(state["model"])
    except (KeyError, RuntimeError) as exc:
        raise InputError(f"{path}: training state does not fit this model "
                         f"({' '.join(str(exc).split())[:160]})") from None
    return int(state["epoch"]), list(state["history"])
