"""EOPM training (NeuralFuse's Expectation Over Perturbed Models) of a generator G in front of a
frozen quantized base model M.

    loss = CE(M_0(G(x)), y) + lam * (1/N) * sum_i CE(M_i(G(x)), y)

M_0 is M with its clean quantized weights, M_i with the faulty weights read back through fault map
i (drawn fresh every step). Only G is trained: M's tensors enter `functional_call` detached and M
stays in eval mode (BatchNorm running statistics frozen). The N+1 weight sets are stacked and
run in one vmapped call (or a loop over the stack), never as copies of the model.

A run checkpoints after every epoch (G, optimizer, scheduler, the trainer's shuffling generator,
the fault sampler's numpy generator) and `fit` resumes from that file, so an interrupted and
resumed run gives bit-for-bit the generator an uninterrupted run gives. All random state lives in
the trainer: G is initialised under a forked, seeded RNG and nothing in training or loading reads
or sets torch's global RNG (a caller's random stream is left as it was). With a validator,
G is scored after every epoch on held-out images and fixed fault maps and the best-scoring G is
kept (in the checkpoint too); scoring touches no random state, so it changes nothing else.
"""
from __future__ import annotations

import contextlib
import copy
import hashlib
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from fusion import generators
from sramsim import QuantizedModel
from sramsim.errors import InputError
from sramsim.inject.draws import Sampler
from sramsim.inject.weight_sets import WeightSets
from sramsim.nn.models import atomic_torch_save, read_torch_file
from sramsim.progress import progress as reporter

CHECKPOINT = "checkpoint.pt"
CHECKPOINT_FORMAT = "fusion.eopm-checkpoint"
CHECKPOINT_VERSION = 1
# Settings a resumed run must share with the run it continues (epochs may grow).
_RESUME_KEYS = ("generator", "width", "n_perturbed", "lam", "batch_size", "lr", "betas", "lr_step",
                "lr_gamma", "seed", "identity_init", "batched", "precision", "ema")
# Settings added later: what a checkpoint without them was trained with.
_RESUME_DEFAULTS = {"ema": 0.0}


@dataclass
class EopmConfig:
    """Training settings. Defaults follow NeuralFuse: N = 10, lam = 5, Adam(1e-3, (0.5, 0.999))."""

    generator: str = "ConvS"
    width: float = 1.0
    n_perturbed: int = 10
    lam: float = 5.0
    batch_size: int = 128
    lr: float = 1e-3
    betas: tuple[float, float] = (0.5, 0.999)
    lr_step: int = 10           # epochs between learning-rate decays (StepLR)
    lr_gamma: float = 0.5
    seed: int = 0
    identity_init: bool = True  # start from G(x) = x (last layer's scale zeroed)
    batched: str = "auto"       # "vmap": one call over the stacked models; "loop": one call each;
                                # "auto": loop on CPU (measured faster there), vmap elsewhere
    precision: str = "fp32"     # "bf16": autocast G and M to bfloat16 (CPUs with AMX, GPUs)
    ema: float = 0.0            # > 0: the saved G is an exponential moving average of the trained
                                # one with this decay per step (smooths the noise of random fault
                                # maps)

    def __post_init__(self) -> None:
        betas = tuple(float(b) for b in self.betas)
        if len(betas) != 2:
            raise InputError(f"betas must be two numbers, got {self.betas!r}")
        self.betas = (betas[0], betas[1])
        if self.generator not in generators.NAMES:
            raise InputError(f"unknown generator {self.generator!r}; use one of "
                             f"{', '.join(generators.NAMES)}")
        checks = [(self.n_perturbed >= 1, "n_perturbed must be >= 1"),
                  (self.lam >= 0, "lam must be >= 0"),
                  (self.batch_size >= 1, "batch_size must be >= 1"),
                  (self.lr > 0, "lr must be > 0"), (self.lr_step >= 1, "lr_step must be >= 1"),
                  (self.width > 0, "width must be > 0"),
                  (0 <= self.ema < 1, "ema must be in [0, 1)"),
                  (self.batched in ("auto", "vmap", "loop"),
                   "batched must be 'auto', 'vmap' or 'loop'"),
                  (self.precision in ("fp32", "bf16"), "precision must be 'fp32' or 'bf16'")]
        for ok, message in checks:
            if not ok:
                raise InputError(message)


def eopm_loss(logits: torch.Tensor, y: torch.Tensor, lam: float) -> tuple[torch.Tensor,
                                                                          torch.Tensor]:
    """logits [1 + N, B, classes] (clean model first) -> (loss, per-model mean CE [1 + N])."""
    k = logits.shape[0]
    ce = F.cross_entropy(logits.float().flatten(0, 1), y.repeat(k), reduction="none")
    ce = ce.view(k, -1).mean(1)
    pert = ce[1:].mean() if k > 1 else ce.new_zeros(())
    return ce[0] + lam * pert, ce


def stacked_logits(model: nn.Module, stacked: dict[str, torch.Tensor], x: torch.Tensor,
                   batched: str = "vmap") -> torch.Tensor:
    """Outputs [K, B, classes] of `model` with each of K weight sets (leading axis of `stacked`).

    Tensors of `model` not in `stacked` (biases, BatchNorm) are shared, detached, by all K.
    """
    shared = {n: t.detach() for n, t in model.named_parameters() if n not in stacked}
    k = next(iter(stacked.values())).shape[0]
    if batched == "loop":
        return torch.stack([functional_call(model, ({n: w[i] for n, w in stacked.items()}, shared),
                                            (x,))
                            for i in range(k)])

    def one(weights: dict[str, torch.Tensor], inp: torch.Tensor) -> torch.Tensor:
        return functional_call(model, (weights, shared), (inp,))
    return vmap(one, in_dims=(0, None))(stacked, x)


def image_fingerprint(qm: QuantizedModel) -> str:
    """Identifies the base model's memory image (a resumed run must use the same base)."""
    return hashlib.sha1(qm.image.tobytes()).hexdigest()[:16]


class Validate(Protocol):
    """What `EopmTrainer.fit` scores G with (`fusion.evaluation.Validator`)."""

    def __call__(self, generator: nn.Module) -> float:
        """The score of `generator` (higher is better)."""
        ...

    def describe(self) -> dict:
        """What the scores are measured on (a resumed run must validate on the same)."""
        ...


class EopmTrainer:
    """Trains a generator against fault maps from `sampler` on the frozen base model `qm.model`.

    The base model is moved to `device` and put in eval mode; its tensors never get gradients.
    """

    def __init__(self, qm: QuantizedModel, sampler: Sampler, in_channels: int,
                 config: EopmConfig | None = None, device: str | torch.device = "cpu",
                 weight_path: str | None = None):
        self.config = config or EopmConfig()
        self.device = torch.device(device)
        self.qm = qm
        self.base = qm.model.to(self.device).eval()
        self.sampler = sampler
        self.weights = WeightSets(qm, self.device, weight_path)
        c = self.config
        self.batched = c.batched if c.batched != "auto" else (
            "loop" if self.device.type == "cpu" else "vmap")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(c.seed)
            self.generator = generators.build(c.generator, in_channels, width=c.width,
                                              identity_init=c.identity_init).to(self.device)
        self.optimizer = torch.optim.Adam(self.generator.parameters(), lr=c.lr, betas=c.betas)
        self.averaged = None if c.ema == 0 else AveragedModel(
            self.generator, multi_avg_fn=get_ema_multi_avg_fn(c.ema), use_buffers=True)
        self.scheduler = torch.optim.lr_scheduler.StepLR(self.optimizer, c.lr_step, c.lr_gamma)
        self.shuffle = torch.Generator().manual_seed(c.seed)
        self.epoch = 0
        self.steps_run = 0           # steps taken by this object's `fit` calls (not the
                                     # checkpoint's)
        self.history: list[dict] = []
        self.train_seconds = 0.0
        # the best-scoring G so far when `fit` validates: {"score", "epoch", "state"}
        self.best: dict | None = None
        self._validation: dict | None = None   # what the scores were measured on

    # --- one step -----------------------------------------------------------------------------
    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.config.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def step(self, x: torch.Tensor, y: torch.Tensor) -> dict:
        """One EOPM update of G on a batch; returns the loss and its clean / perturbed parts."""
        if self.base.training:
            raise RuntimeError("the base model must stay in eval mode (frozen BatchNorm "
                               "statistics)")
        c = self.config
        self.generator.train()
        stacked = self.weights.sample(self.sampler, c.n_perturbed, with_clean=True)
        x, y = x.to(self.device), y.to(self.device)
        with self._autocast():
            logits = stacked_logits(self.base, stacked, self.generator(x), self.batched)
        loss, ce = eopm_loss(logits, y, c.lam)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        if self.averaged is not None:
            self.averaged.update_parameters(self.generator)
        ce = ce.detach()
        return {"loss": float(loss.detach()), "ce_clean": float(ce[0]),
                "ce_perturbed": float(ce[1:].mean()) if ce.shape[0] > 1 else 0.0}

    # --- epochs, checkpoints --------------------------------------------------------------------
    def fit(self, x: torch.Tensor, y: torch.Tensor, epochs: int, out_dir: str | Path | None = None,
            progress: bool = True, deadline: float | None = None,
            validate: Validate | None = None) -> list[dict]:
        """Train until `epochs` epochs are done, resuming from `out_dir/checkpoint.pt` if present.

        deadline: a `time.monotonic()` value; training stops after the step that passes it
        (the unfinished epoch is not checkpointed). validate: a `fusion.evaluation.Validator`
        (or any callable G -> score with a `describe()`); G is scored after every epoch (and
        when the deadline stops one) and the best-scoring G is kept (`best`, `result`); its
        time counts as training time. Returns the per-epoch history.
        """
        if epochs < 1:
            raise InputError(f"epochs must be >= 1, got {epochs}")
        self._validation = None if validate is None else validate.describe()
        ckpt = Path(out_dir) / CHECKPOINT if out_dir is not None else None
        if ckpt is not None and ckpt.exists():
            self.load_checkpoint(ckpt)
        n = x.shape[0]
        bs = self.config.batch_size
        while self.epoch < epochs:
            start = time.perf_counter()
            perm = torch.randperm(n, generator=self.shuffle)
            totals = np.zeros(3)
            steps = 0
            bar = reporter(range(0, n, bs), desc=f"epoch {self.epoch + 1}/{epochs}", unit="batch",
                           enabled=progress)
            for s in bar:
                idx = perm[s:s + bs]
                r = self.step(x[idx], y[idx])
                self.steps_run += 1
                totals += (r["loss"], r["ce_clean"], r["ce_perturbed"])
                steps += 1
                bar.set_postfix(loss=f"{r['loss']:.3f}", refresh=False)
                if deadline is not None and time.monotonic() > deadline:
                    break
            bar.close()
            finished = steps == -(-n // bs)
            means = totals / max(steps, 1)
            record = {"epoch": self.epoch + 1, "steps": steps, "loss": float(means[0]),
                      "ce_clean": float(means[1]), "ce_perturbed": float(means[2]),
                      "lr": self.optimizer.param_groups[0]["lr"], "complete": finished}
            if validate is not None and steps:
                record["val_score"] = self._score(validate, self.epoch + 1)
            self.train_seconds += time.perf_counter() - start
            self.history.append(record)
            if not finished:
                break
            self.epoch += 1
            self.scheduler.step()
            if ckpt is not None:
                self.save_checkpoint(ckpt)
        self.generator.eval()
        return self.history

    def _score(self, validate: Validate, epoch: int) -> float:
        """Validate the current G; remember it when it beats the best so far."""
        current = self.generator if self.averaged is None else self.averaged.module
        score = float(validate(current))
        if self.best is None or score > self.best["score"]:
            self.best = {"score": score, "epoch": epoch,
                         "state": {k: v.detach().clone() for k, v in current.state_dict().items()}}
        return score

    @property
    def result(self) -> generators.Generator:
        """The generator to keep: the best-validated one when `fit` validated, else the moving
        average when `ema` is set, else the trained one."""
        g = self.generator if self.averaged is None else self.averaged.module
        assert isinstance(g, generators.Generator)      # the average is a copy of the generator
        if self.best is not None:
            g = copy.deepcopy(g)
            g.load_state_dict(self.best["state"])
        return g.eval()

    def state_dict(self) -> dict:
        """Everything an exact resume needs (the checkpoint's contents)."""
        return {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION,
                "config": asdict(self.config), "base_image": image_fingerprint(self.qm),
                "fault_source": self.sampler.describe(), "epoch": self.epoch,
                "generator": self.generator.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "history": self.history,
                "train_seconds": self.train_seconds,
                "averaged": None if self.averaged is None else self.averaged.state_dict(),
                "best": self.best, "validation": self._validation,
                "rng": {"shuffle": self.shuffle.get_state(),
                        "sampler": _encode_np_state(self.sampler.state())}}

    def save_checkpoint(self, path: str | Path) -> None:
        """Write `state_dict()` atomically (a crash never leaves half a checkpoint)."""
        atomic_torch_save(self.state_dict(), path)

    def load_checkpoint(self, path: str | Path) -> None:
        """Continue a run: refuses a checkpoint made with other settings or another base model."""
        obj = read_torch_file(path, CHECKPOINT_FORMAT, CHECKPOINT_VERSION, "EOPM checkpoint")
        saved = obj["config"]
        mine = asdict(self.config)
        diff = [k for k in _RESUME_KEYS
                if _norm(saved.get(k, _RESUME_DEFAULTS.get(k))) != _norm(mine.get(k))]
        if diff:
            raise InputError(f"{path}: made with other settings ({', '.join(diff)}); "
                             f"use another output directory or the same settings")
        if obj["base_image"] != image_fingerprint(self.qm):
            raise InputError(f"{path}: made for another base model; use another output directory")
        if _norm(obj["fault_source"]) != _norm(self.sampler.describe()):
            raise InputError(f"{path}: made with another fault source "
                             f"({obj['fault_source']}); use another output directory")
        if _norm(obj.get("validation")) != _norm(self._validation):
            raise InputError(f"{path}: made with other validation settings "
                             f"({obj.get('validation')}); use another output directory or the same")
        self.generator.load_state_dict(obj["generator"])
        self.best = obj.get("best")
        self.optimizer.load_state_dict(obj["optimizer"])
        self.scheduler.load_state_dict(obj["scheduler"])
        if self.averaged is not None:
            self.averaged.load_state_dict(obj["averaged"])
        self.shuffle.set_state(obj["rng"]["shuffle"])
        # (older checkpoints also hold torch's global RNG state under "torch": never restored,
        # since training draws nothing from it)
        self.sampler.set_state(_decode_np_state(obj["rng"]["sampler"]))
        self.epoch = int(obj["epoch"])
        self.history = list(obj["history"])
        self.train_seconds = float(obj["train_seconds"])


def _norm(v: object) -> object:
    """Compare settings across a save/load round trip (tuples come back as lists)."""
    if isinstance(v, (list, tuple)):
        return [_norm(i) for i in v]
    if isinstance(v, dict):
        return {k: _norm(i) for k, i in v.items()}
    return v


def _encode_np_state(state: dict) -> dict:
    """numpy bit-generator state -> only str/int/dict leaves (torch's weights_only loader)."""
    return {k: (_encode_np_state(v) if isinstance(v, dict) else
                {"__int__": str(v)} if isinstance(v, int) and abs(v) >= 2 ** 63 else v)
            for k, v in state.items()}


def _decode_np_state(state: dict) -> dict:
    """Inverse of `_encode_np_state`."""
    return {k: (int(v["__int__"]) if isinstance(v, dict) and "__int__" in v else
                _decode_np_state(v) if isinstance(v, dict) else v)
            for k, v in state.items()}
