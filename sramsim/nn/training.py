"""Quantization-aware training of base models, with weight clipping and RandBET.

Every step runs the model on fake-quantized weights (straight-through estimator) of exactly the
tensors `QuantizedModel` stores in memory, swapped in with `torch.func.functional_call`.
- clipping (`clip=W`): those weights are projected to [-W, W] before training and after every
  optimizer step, so the bound holds for every forward pass and for the saved model.
- RandBET (Stutz et al., MLSys 2021, `randbet_p=P`): each step also runs the model on the
  `QuantizedModel` image of the current weights read back through a fresh `RandomBitErrors(P)`
  pattern; the update uses the average of the clean and perturbed gradients. The perturbed
  weights enter as w + (w_faulty - w).detach(), so their gradient reaches the float weights.
  Two more pieces of their recipe are options: `randbet_grad_clip=C` clamps every element of the
  perturbed pass's gradient to [-C, C] before it is averaged with the clean one (their code: 0.05;
  a rare error in a high bit otherwise gives one huge step), and `randbet_start=E` trains E clean
  epochs first (their code turns the perturbed pass on only once the clean loss is low).

All randomness is derived from (seed, epoch, step): the batch order of epoch e and the bit error
pattern of step s do not depend on anything that happened before, so a run resumed from the
per-epoch training state is bit-identical to an uninterrupted one without saving RNG states.
"""
from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from sramsim.errors import InputError, check_writable
from sramsim.inject import quantization as Q
from sramsim.inject.quantized_model import QuantizedModel, quantized_parameter_names
from sramsim.memory.random_errors import RandomBitErrors
from sramsim.nn.data import Dataset, load_dataset
from sramsim.nn.evaluation import accuracy
from sramsim.nn.fat import FaultInjector, canonical_source, check_fat
from sramsim.nn.models import (
    atomic_torch_save,
    build,
    load_checkpoint,
    read_torch_file,
    save_checkpoint,
)

STATE_FORMAT = "sramsim.train-state"
STATE_VERSION = 1
OPTIMIZERS = ("adam", "sgd")
SCHEDULES = ("cosine", "constant")
DEFAULT_LR = {"adam": 1e-3, "sgd": 0.05}


@dataclass
class TrainOptions:
    """How to train; everything here is recorded and must match for a run to resume."""

    epochs: int = 1
    batch_size: int = 128
    lr: float | None = None            # None: 1e-3 for adam, 0.05 for sgd
    optimizer: str = "adam"
    schedule: str = "cosine"           # cosine decay to 0 over all steps, or constant
    weight_decay: float = 0.0
    seed: int = 0
    bits: int = 8
    scheme: str = "symmetric"
    clip: float | None = None
    randbet_p: float = 0.0
    randbet_grad_clip: float | None = None   # clamp the perturbed gradient to [-C, C] (Stutz: 0.05)
    randbet_start: int = 0                   # clean epochs before RandBET's perturbed pass starts
    fat_ber: float = 0.0               # fault-aware training target BER (0: off); see nn/fat.py
    fat_curriculum: str = "log"
    fat_source: str = "random"
    fat_start: float = 1e-5
    fat_loss: str = "faulty"           # "faulty" | "clean+faulty" (RandBET's loss, FAT's faults)
    # Diehl & Cook (STDP) only: the input rate in Hz at pixel 1 and theta's online rest time in
    # ms (`DiehlCook.set_recipe`); None keeps the model's (128 Hz, BindsNET's batched time base).
    stdp_intensity: float | None = None
    stdp_rest_ms: float | None = None

    def __post_init__(self) -> None:
        if self.lr is None:
            self.lr = DEFAULT_LR.get(self.optimizer, 1e-3)
        self.validate()

    def validate(self) -> None:
        """Check every option (InputError naming it): the choices, the numbers, RandBET's and
        FAT's settings and how they combine."""
        self._check_choices()
        self._check_numbers()
        self._check_randbet()
        check_fat(self.fat_ber, self.fat_curriculum, self.fat_source, self.fat_start,
                  self.fat_loss)
        if self.fat_ber:
            self.fat_source = canonical_source(self.fat_source)
        if self.fat_ber and self.randbet_p:
            raise InputError("fat_ber and randbet_p are two ways of training on bit errors; "
                             "choose one")

    def _check_choices(self) -> None:
        for name, allowed in (("bits", Q.BITS), ("scheme", Q.SCHEMES),
                              ("optimizer", OPTIMIZERS), ("schedule", SCHEDULES)):
            value = getattr(self, name)
            if value not in allowed:
                raise InputError(f"{name} must be one of {', '.join(map(str, allowed))}, got "
                                 f"{value!r}")
        Q.check_scheme(self.scheme, self.bits)         # a scheme defined at these bits

    def _check_numbers(self) -> None:
        for name, low in (("epochs", 1), ("batch_size", 1), ("seed", 0)):
            value = getattr(self, name)
            if int(value) != value or value < low:
                kind = "a positive" if low else "a non-negative"
                raise InputError(f"{name} must be {kind} integer, got {value!r}")
        if self.lr is None or not (math.isfinite(self.lr) and self.lr > 0):
            raise InputError(f"lr must be a positive number, got {self.lr!r}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise InputError(f"weight decay must be >= 0, got {self.weight_decay!r}")
        if self.clip is not None and not (math.isfinite(self.clip) and self.clip > 0):
            raise InputError(f"clip must be a positive number, got {self.clip!r}")
        from sramsim.nn.models.diehl_cook import check_recipe
        check_recipe(self.stdp_intensity, self.stdp_rest_ms, ("stdp_intensity", "stdp_rest_ms"))

    def _check_randbet(self) -> None:
        if not (0.0 <= self.randbet_p < 1.0):
            raise InputError(f"randbet_p must lie in [0, 1), got {self.randbet_p!r}")
        if self.randbet_grad_clip is not None:
            if not (math.isfinite(self.randbet_grad_clip) and self.randbet_grad_clip > 0):
                raise InputError(f"randbet_grad_clip must be a positive number, got "
                                 f"{self.randbet_grad_clip!r}")
            if not self.randbet_p and not (self.fat_ber and self.fat_loss == "clean+faulty"):
                raise InputError("randbet_grad_clip clamps the perturbed pass's gradient; it "
                                 "needs randbet_p or fat_loss 'clean+faulty'")
        if int(self.randbet_start) != self.randbet_start or self.randbet_start < 0:
            raise InputError("randbet_start must be a non-negative integer, "
                             f"got {self.randbet_start!r}")
        if self.randbet_start:
            if not self.randbet_p:
                raise InputError("randbet_start delays RandBET; it needs randbet_p")
            if self.randbet_start >= self.epochs:
                raise InputError("randbet_start must be less than the epochs trained "
                                 f"({self.epochs}), got {self.randbet_start} "
                                 "(RandBET would never run)")

    def as_dict(self) -> dict:
        """The options as recorded in checkpoints; without FAT the FAT fields are left out, and
        RandBET's gradient clamp and start epoch when unset, so models trained before those
        existed still match their settings."""
        d = asdict(self)
        if self.randbet_grad_clip is None:
            d.pop("randbet_grad_clip")
        if not self.randbet_start:
            d.pop("randbet_start")
        if not self.fat_ber:
            for k in ("fat_ber", "fat_curriculum", "fat_source", "fat_start"):
                d.pop(k)
        if not self.fat_ber or self.fat_loss == "faulty":
            d.pop("fat_loss")
        for k in ("stdp_intensity", "stdp_rest_ms"):
            if d[k] is None:
                d.pop(k)
        return d


# ---------------------------------------------------------------- one step

def qat_weights(model: nn.Module, names: list[str], opts: TrainOptions) -> dict[str, torch.Tensor]:
    """Fake-quantized stored weights (straight-through gradient) for functional_call."""
    params = dict(model.named_parameters())
    return {n: Q.fake_quantize(params[n], opts.bits, opts.scheme, opts.clip) for n in names}


def randbet_weights(model: nn.Module, names: list[str], opts: TrainOptions,
                    source: RandomBitErrors) -> dict[str, torch.Tensor]:
    """The current weights as read back from memory through `source`, with a straight-through
    gradient to the float weights: value w_faulty, d/dw = 1."""
    params = dict(model.named_parameters())
    device = params[names[0]].device
    qm = QuantizedModel(model, opts.bits, opts.scheme, opts.clip)
    faulty = qm.perturbed(source, device=device)
    return {n: params[n] + (faulty[n].to(params[n].dtype) - params[n]).detach() for n in names}


class _ClampGrad(torch.autograd.Function):
    """Identity forward; the backward clamps the incoming gradient to [-bound, bound]."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, bound: float) -> torch.Tensor:
        ctx.bound = bound
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad.clamp(-ctx.bound, ctx.bound), None


def clamp_grad(x: torch.Tensor, bound: float) -> torch.Tensor:
    """`x`, with the gradient flowing back through it clamped elementwise to [-bound, bound]."""
    return _ClampGrad.apply(x, bound)


def epoch_seed(seed: int, epoch: int) -> int:
    """Seed of the batch order of one epoch."""
    return int(np.random.SeedSequence((int(seed), 0, int(epoch))).generate_state(1)[0])


def step_seed(seed: int, epoch: int, step: int) -> int:
    """Independent, reproducible seed for the bit error pattern of one step."""
    return int(np.random.SeedSequence((int(seed), 1, int(epoch), int(step))).generate_state(1)[0])


def step_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, opts: TrainOptions,
              names: list[str] | None = None, seed: int = 0,
              fat_weights: dict[str, torch.Tensor] | None = None,
              randbet: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss to minimise, logits) for one batch; the model must be in train mode.

    With RandBET (and `randbet`: False runs a clean step, e.g. before `randbet_start`) the loss
    is the mean of the clean and the perturbed cross-entropy, so its gradient is the average of
    the two gradients; with `randbet_grad_clip` the perturbed gradient of every parameter is
    clamped elementwise before that average, as in Stutz et al.'s code (davidstutz/
    random-bit-error-robustness, common/train/average_weights_training.py: grad += clamp(
    perturbed grad, -0.05, 0.05), then both divided by 2). The perturbed pass runs on copies of
    the buffers: BatchNorm running statistics follow the clean model only. With FAT
    (`fat_weights`, from `sramsim.nn.fat.FaultInjector`) the perturbed weights are FAT's: with
    fat_loss "faulty" the only pass runs on them (the network learns for the memory it will run
    on); with "clean+faulty" the loss is RandBET's mean of the clean and the faulty pass.
    """
    names = names if names is not None else quantized_parameter_names(model)
    if fat_weights is not None and opts.fat_loss == "faulty":
        out = torch.func.functional_call(model, fat_weights, (x,))
        return nn.functional.cross_entropy(out, y), out
    out = torch.func.functional_call(model, qat_weights(model, names, opts), (x,))
    loss = nn.functional.cross_entropy(out, y)
    perturbed = fat_weights
    if perturbed is None and opts.randbet_p > 0 and randbet:
        perturbed = randbet_weights(model, names, opts, RandomBitErrors(opts.randbet_p, seed=seed))
    if perturbed is not None:
        weights = dict(perturbed)
        if opts.randbet_grad_clip is not None:
            # Half of the loss below is the perturbed CE, so its gradient arrives here halved:
            # clamping 0.5 g to 0.5 C is exactly 0.5 clamp(g, C) (scaling by 2^-1 is exact).
            bound = 0.5 * opts.randbet_grad_clip
            weights = {n: clamp_grad(w, bound) for n, w in weights.items()}
            weights.update({n: clamp_grad(p, bound) for n, p in model.named_parameters()
                            if n not in weights})
        weights.update({n: b.clone() for n, b in model.named_buffers()})
        out_p = torch.func.functional_call(model, weights, (x,))
        loss = 0.5 * (loss + nn.functional.cross_entropy(out_p, y))
    return loss, out


def project(model: nn.Module, names: list[str], clip: float | None) -> None:
    """Clip the stored weights into [-clip, clip] (a projection after the optimizer step)."""
    if clip is None:
        return
    params = dict(model.named_parameters())
    with torch.no_grad():
        for n in names:
            params[n].clamp_(-clip, clip)


def quantized_accuracy(model: nn.Module, dataset: Dataset, opts: TrainOptions,
                       batch_size: int = 1000) -> float:
    """Accuracy with the clean quantized weights the accelerator would hold."""
    qm = QuantizedModel(model, opts.bits, opts.scheme, opts.clip)
    device = next(model.parameters()).device
    return accuracy(model, dataset, qm.clean_weights(device), batch_size)


# ---------------------------------------------------------------- the loop

def _optimizer(model: nn.Module, opts: TrainOptions) -> torch.optim.Optimizer:
    assert opts.lr is not None                      # __post_init__ fills it in
    if opts.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=opts.lr, momentum=0.9, nesterov=True,
                               weight_decay=opts.weight_decay)
    return torch.optim.Adam(model.parameters(), lr=opts.lr, weight_decay=opts.weight_decay)


def _scheduler(optimizer: torch.optim.Optimizer, opts: TrainOptions,
               total_steps: int) -> torch.optim.lr_scheduler.LRScheduler:
    if opts.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, total_steps))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)


def _batches(n: int, batch_size: int) -> list[tuple[int, int]]:
    """Batch bounds; a trailing batch of one sample is dropped (BatchNorm needs two)."""
    bounds = [(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] == 1:
        bounds.pop()
    return bounds


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def train(model: nn.Module, train_set: Dataset, opts: TrainOptions, test_set: Dataset | None = None,
          state_path: str | os.PathLike | None = None, tag: dict | None = None,
          progress: bool = True, log: Callable[[str], None] | None = _stderr,
          on_epoch_end: Callable[[int, dict], None] | None = None) -> list[dict]:
    """Train `model` in place; returns the per-epoch history.

    state_path: after every epoch the model, optimizer and scheduler state and the history are
    written there; if it exists when training starts (same `opts` and `tag`), training resumes
    after its last finished epoch. on_epoch_end(epoch, record) runs after each state write.
    """
    from sramsim.progress import progress as reporter

    if len(train_set) < 2:
        raise InputError(f"training set {train_set.name!r} needs at least 2 "
                         f"samples, has {len(train_set)}")
    if opts.stdp_intensity is not None or opts.stdp_rest_ms is not None:
        raise InputError("stdp_intensity and stdp_rest_ms are a Diehl & Cook network's recipe; "
                         "this model learns by gradients")
    names = quantized_parameter_names(model)
    if not names:
        raise InputError("model has no conv/linear weights to train")
    device = next(model.parameters()).device
    bounds = _batches(len(train_set), opts.batch_size)
    optimizer = _optimizer(model, opts)
    scheduler = _scheduler(optimizer, opts, opts.epochs * len(bounds))
    config = {"options": opts.as_dict(), "tag": dict(tag or {})}
    injector = FaultInjector(model, names, opts)
    history: list[dict] = []
    start = 0
    if state_path is not None and Path(state_path).exists():
        start, history = _resume(state_path, config, model, optimizer, scheduler)
        if log and start < opts.epochs:
            log(f"resuming from {state_path} after epoch {start}/{opts.epochs}")
    project(model, names, opts.clip)
    for epoch in range(start, opts.epochs):
        t0 = time.perf_counter()
        model.train()
        perm = torch.randperm(len(train_set), generator=torch.Generator().manual_seed(
            epoch_seed(opts.seed, epoch)))
        total_loss = torch.zeros((), dtype=torch.float64)
        correct, seen = 0, 0
        bar = reporter(bounds, desc=f"epoch {epoch + 1}/{opts.epochs}", unit="batch",
                       enabled=progress)
        for step, (a, b) in enumerate(bar):
            idx = perm[a:b]
            x, y = train_set.x[idx].to(device), train_set.y[idx].to(device)
            loss, out = step_loss(model, x, y, opts, names, step_seed(opts.seed, epoch, step),
                                  injector.weights(model, epoch, step),
                                  randbet=epoch >= opts.randbet_start)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            project(model, names, opts.clip)
            with torch.no_grad():
                total_loss += loss.detach().double().cpu() * (b - a)
                correct += int((out.argmax(1) == y).sum())
                seen += b - a
            if step % 20 == 0:
                bar.set_postfix(loss=f"{float(loss.detach()):.3f}")
        bar.close()
        record = {"epoch": epoch + 1, "loss": float(total_loss / seen),
                  "train_accuracy": correct / seen, "seconds": time.perf_counter() - t0}
        if injector.active:
            record["fat_ber"] = injector.ber(epoch)
        if opts.randbet_start:
            record["randbet"] = epoch >= opts.randbet_start
        if test_set is not None:
            record["test_accuracy"] = quantized_accuracy(model, test_set, opts)
        history.append(record)
        if state_path is not None:
            _save_state(state_path, config, epoch + 1, model, optimizer, scheduler, history)
        if log:
            test = (f", test accuracy {record['test_accuracy']:.4f}"
                    if "test_accuracy" in record else "")
            log(f"epoch {epoch + 1}/{opts.epochs}: loss {record['loss']:.4f}, train accuracy "
                f"{record['train_accuracy']:.4f}{test} ({record['seconds']:.1f} s)")
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1, record)
    model.eval()
    return history


def _save_state(path: str | os.PathLike, config: dict, epoch: int, model: nn.Module,
                optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LRScheduler,
                history: list[dict]) -> None:
    atomic_torch_save({"format": STATE_FORMAT, "version": STATE_VERSION, "config": config,
                       "epoch": epoch,
                       "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                       "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                       "history": history}, path)


def _resume(path: str | os.PathLike, config: dict, model: nn.Module,
            optimizer: torch.optim.Optimizer,
            scheduler: torch.optim.lr_scheduler.LRScheduler) -> tuple[int, list[dict]]:
    state = read_torch_file(path, STATE_FORMAT, STATE_VERSION, "sramsim training state")
    if _spelled_now(state.get("config")) != config:
        raise InputError(f"{path}: training state was written with different options; delete it "
                         "to start over or choose another output")
    try:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
    except (KeyError, RuntimeError, ValueError) as exc:
        raise InputError(f"{path}: training state does not fit this model "
                         f"({' '.join(str(exc).split())[:160]})") from None
    return int(state["epoch"]), list(state["history"])


# ---------------------------------------------------------------- the whole job

def state_path_for(out: str | os.PathLike) -> Path:
    """Where the per-epoch training state of a run writing `out` lives."""
    return Path(str(out) + ".partial")


def train_base(arch: str, data: str, out: str | os.PathLike, opts: TrainOptions, *,
               norm: str = "batch", limit: int | None = None, image_size: int | None = None,
               device: str | torch.device = "cpu", init: str | os.PathLike | None = None,
               force: bool = False, overwrite: bool = False, progress: bool = True,
               log: Callable[[str], None] | None = _stderr,
               on_epoch_end: Callable[[int, dict], None] | None = None) -> dict:
    """Train `arch` on `data` and save it to `out` with `save_checkpoint`; returns the meta.

    Re-running with the same `out` resumes from `out.partial`; if `out` already holds a model
    trained with the same settings it is kept and its meta returned (unless `force`). Any other
    existing `out` (a model trained with other settings, another file) is refused with
    `OutputExists` unless `force`, or `overwrite` (a cache the caller owns, retrained when its
    settings change): a user's checkpoint is never overwritten by accident.
    image_size: resize ImageFolder images to this square size (recorded as meta["resize"], to be
    passed to `load_dataset(..., image_size=...)` when the model is evaluated later).
    init: a checkpoint of the same architecture to start from instead of fresh weights (e.g.
    fault-aware retraining of a baseline); its file digest is part of the recorded settings.
    A Diehl & Cook network (`diehl-cook<N>`) is trained by STDP (`sramsim.nn.stdp`).
    """
    out = Path(out)
    dataset_spec = str(Path(data).resolve()) if Path(data).is_dir() else str(data)
    tag: dict[str, Any] = {"arch": arch, "norm": norm, "dataset": dataset_spec, "limit": limit,
                           "resize": image_size}
    init_model = None
    if init is not None:
        init_model, init_meta = load_checkpoint(init)
        if init_meta["arch"] != arch or init_meta.get("norm", "batch") != norm:
            raise InputError(f"init {init}: holds a {init_meta['arch']} ({init_meta.get('norm')} "
                             f"norm) model, not {arch} ({norm} norm)")
        tag["init"] = {"path": str(Path(init).resolve()), "sha256": file_digest(init)}
    if out.exists() and not force:
        done, why = _finished(out, opts, tag)
        if done is None and not overwrite:
            raise OutputExists(f"{out}: exists and {why}; refusing to overwrite it")
        if done is not None:
            if log:
                log(f"{out} already holds this model; nothing to do (force retrains it)")
            return {**done, "skipped": True}
    # Checked before any epoch runs: otherwise the first epoch's state write is where it fails.
    check_writable(out, "output")
    train_set = load_dataset(data, "train", limit, image_size)
    test_set = load_dataset(data, "test", limit, image_size)
    if train_set.in_channels != test_set.in_channels or train_set.image_size != test_set.image_size:
        raise InputError(f"{data}: train images are {train_set.in_channels}x{train_set.image_size} "
                         f"but test images are {test_set.in_channels}x{test_set.image_size}")
    num_classes = max(train_set.num_classes, test_set.num_classes)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(opts.seed)
        model = build(arch, train_set.in_channels, num_classes, norm, train_set.image_size)
    if init_model is not None:
        try:
            model.load_state_dict(init_model.state_dict())
        except RuntimeError:
            raise InputError(f"init {init}: its weights do not fit a {arch} model for "
                             f"{train_set.name} ({train_set.in_channels}x{train_set.image_size}, "
                             f"{num_classes} classes)") from None
        if hasattr(init_model, "input_coding"):     # a spiking model keeps its input coding
            model.input_coding = init_model.input_coding
        from sramsim.nn.models.diehl_cook import DiehlCook
        if isinstance(init_model, DiehlCook) and isinstance(model, DiehlCook):
            model.load_checkpoint_meta(init_model.checkpoint_meta())    # and its recipe
    model.to(device)
    t0 = time.perf_counter()
    trainer: Callable[..., list[dict]] = train
    if arch.startswith("diehl-cook"):
        from sramsim.nn.stdp import train_stdp as trainer
    history = trainer(model, train_set, opts, test_set, state_path_for(out), tag, progress, log,
                      on_epoch_end)
    names = quantized_parameter_names(model)
    meta = {
        "arch": arch, "in_channels": train_set.in_channels, "num_classes": num_classes,
        "norm": norm, "bits": opts.bits, "scheme": opts.scheme, "clip": opts.clip,
        "dataset": dataset_spec, "dataset_name": train_set.name,
        "image_size": list(train_set.image_size), "resize": image_size, "limit": limit,
        "test_accuracy": history[-1]["test_accuracy"],   # final weights, quantized, clean
        "float_test_accuracy": accuracy(model, test_set),
        "test_samples": len(test_set), "train_samples": len(train_set),
        "randbet_p": opts.randbet_p, "epochs": opts.epochs, "seed": opts.seed,
        "fat": ({"ber": opts.fat_ber, "curriculum": opts.fat_curriculum,
                 "source": opts.fat_source, "start": opts.fat_start, "loss": opts.fat_loss}
                if opts.fat_ber else None),
        "init": tag.get("init"),
        "quantized_weights": int(sum(dict(model.named_parameters())[n].numel() for n in names)),
        "train_seconds": time.perf_counter() - t0,
        "history": history, "train_config": {"options": opts.as_dict(), "tag": tag},
    }
    model.cpu()
    save_checkpoint(out, model, meta)
    state_path_for(out).unlink(missing_ok=True)
    return {**meta, "skipped": False}


def file_digest(path: str | os.PathLike) -> str:
    """SHA-256 of a file (which checkpoint a run started from)."""
    import hashlib
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _finished(out: Path, opts: TrainOptions, tag: dict) -> tuple[dict | None, str]:
    """(meta, "") if `out` is a checkpoint trained with exactly these settings, else (None, what
    it holds instead)."""
    try:
        _, meta = load_checkpoint(out)
    except InputError as exc:
        return None, f"is not a readable sramsim checkpoint ({exc})"
    mine = _identity({"options": opts.as_dict(), "tag": tag})
    theirs = _identity(_spelled_now(meta.get("train_config")) or {})
    if theirs == mine:
        return meta, ""
    differ = sorted(k for part in ("options", "tag")
                    for k in set(mine[part]) | set(theirs.get(part) or {})
                    if mine[part].get(k) != (theirs.get(part) or {}).get(k))
    return None, (f"holds a model trained with other settings ({', '.join(differ) or 'unknown'} "
                  f"differ)")


def _identity(config: dict) -> dict:
    """A training config as compared for resuming: the init checkpoint by its digest alone (its
    path is recorded, but a study folder moved or copied elsewhere holds the same model)."""
    tag = config.get("tag") if isinstance(config, dict) else None
    if not isinstance(tag, dict) or not isinstance(tag.get("init"), dict):
        return config
    return {**config, "tag": {**tag, "init": {"sha256": tag["init"].get("sha256")}}}


class OutputExists(InputError):
    """train_base's output already holds something other than the model asked for."""


def _spelled_now(config: Any) -> Any:
    """A recorded training config with its FAT source in today's spelling, so models trained
    with "dram:modelK" (sramsim <= 0.1) still match the same settings spelled anew."""
    options = (config or {}).get("options") if isinstance(config, dict) else None
    if not isinstance(options, dict) or "fat_source" not in options:
        return config
    return {**config, "options": {**options,
                                  "fat_source": canonical_source(options["fat_source"],
                                                                 warn=False)}}
