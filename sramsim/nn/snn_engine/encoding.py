"""Rate (Bernoulli-per-step) coding of inputs into spike trains from a counter-based stream.

The stream. Features pair up (i = 2j and 2j + 1); every pair of spike decisions has its own counter
    c = (row * steps + t) * ceil(features / 2) + j    (row: the sample's id, t: step)
and one 64-bit number z = splitmix64(key + (c + 1) * GAMMA), output c + 1 of Steele, Lea & Flood's
SplitMix64 (OOPSLA 2014) started at `key`. Feature 2j takes the uniform u = (z >> 40) / 2^24 (the
top 24 bits), feature 2j + 1 the next 24 bits, u = ((z >> 16) mod 2^24) / 2^24. An element spikes
iff u < p (float32 compare), with p = clamp(x, 0, 1) * scale in float32: probability
ceil(p * 2^24) / 2^24, within 2^-24 of p.

Why a counter-based stream: the draw of one element depends only on (key, row, t, i), not on
how many elements were drawn before, on the batch size or chunking, or on the thread count, and
the kernel needs no state, so it runs in parallel (~1 ns per element here; torch.rand with a
torch.Generator took ~4 ns). `key_from_seed(seed)` gives the key of a fixed seed (eval mode);
`draw_key()` takes one from torch's global RNG (train mode: the trainer seeds that RNG).
"""
from __future__ import annotations

import numpy as np
import torch
from numba import njit, prange

from sramsim.errors import InputError

GAMMA = np.uint64(0x9E3779B97F4A7C15)       # SplitMix64's Weyl increment (golden ratio)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_MASK64 = (1 << 64) - 1


@njit(cache=True, inline="always")
def _mix64(z: np.uint64) -> np.uint64:
    """SplitMix64's output function (Stafford's Mix13 variant) on a uint64."""
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


def _mix64_py(z: int) -> int:
    z &= _MASK64
    z = ((z ^ (z >> 30)) * int(_M1)) & _MASK64
    z = ((z ^ (z >> 27)) * int(_M2)) & _MASK64
    return z ^ (z >> 31)


def key_from_seed(seed: int, stream: int = 0) -> int:
    """The key of `seed` (output 1 of SplitMix64 started at seed), for stream `stream`
    (0, 1, 2, ...: independent streams of one seed, e.g. a re-presentation at a higher rate)."""
    key = _mix64_py(int(seed) + int(GAMMA))
    for _ in range(int(stream)):
        key = _mix64_py(key + int(GAMMA))
    return key


def draw_key(generator: torch.Generator | None = None) -> int:
    """A fresh key from `generator` (default: torch's global RNG), one draw of 63 bits."""
    return int(torch.randint(0, 2**63 - 1, (1,), generator=generator).item())


_LOW24 = np.uint64(0xFFFFFF)


@njit(cache=True, inline="always")
def _row_spikes(p: np.ndarray, out: np.ndarray, base: np.uint64, key: np.uint64) -> None:
    """The spikes of one (row, step) for an even number of features: pair j from counter base + j,
    base = (row * steps + t) * (features / 2)."""
    scale = np.float32(2.0 ** -24)
    for j in range(p.shape[0] // 2):
        z = _mix64(key + (np.uint64(base + j) + np.uint64(1)) * GAMMA)
        out[2 * j] = np.uint8(np.float32(z >> np.uint64(40)) * scale < p[2 * j])
        out[2 * j + 1] = np.uint8(np.float32((z >> np.uint64(16)) & _LOW24) * scale < p[2 * j + 1])


@njit(cache=True, parallel=True)
def _rate_kernel(p: np.ndarray, rows: np.ndarray, steps: int, key: np.uint64,
                 out: np.ndarray) -> None:
    """out[t, b, :] from the pairs of counters (rows[b] * steps + t) * (F / 2) + j; p has an
    even number F of features (the caller pads); one sample per work item."""
    b_count, features = p.shape
    half = features // 2
    for b in prange(b_count):
        for t in range(steps):
            _row_spikes(p[b], out[t, b], (rows[b] * steps + t) * half, key)


# How an input value becomes a spike probability. The data sets hold images scaled to [-1, 1]
# (`sramsim.nn.data`): "intensity" maps them back to the pixel intensity (x + 1) / 2, as
# snntorch's rate coding and BindsNET's Poisson encoding of [0, 1] images mean it; "clamp" takes
# x itself (clipped to [0, 1]), so everything darker than mid-grey never spikes -- what the SNN
# models did before (issue 22), kept so that their checkpoints reproduce.
INPUT_CODINGS = ("intensity", "clamp")


def intensity(x: torch.Tensor, coding: str) -> torch.Tensor:
    """The spike probability per step (before any rate scale) of inputs x, as float32 in [0, 1]."""
    x = x.detach().float()
    if coding == "intensity":
        x = (x + 1.0) * 0.5
    elif coding != "clamp":
        raise InputError(f"input coding {coding!r}: use one of {', '.join(INPUT_CODINGS)}")
    return x.clamp(0.0, 1.0)


def rate_spikes(x: torch.Tensor, steps: int, key: int, scale: float = 1.0,
                rows: torch.Tensor | None = None) -> torch.Tensor:
    """Spike trains (steps, B, *x.shape[1:]) as uint8 0/1 on x's device: element (t, b, i)
    spikes iff u < clamp(x[b, i], 0, 1) * scale (see the module docstring for u).

    rows: the id of every sample (default 0..B-1), so a sample keeps its noise when it is
    encoded again alone or in another batch (a re-presentation passes the same rows)."""
    steps = int(steps)
    if steps < 1:
        raise InputError(f"steps must be a positive integer, got {steps!r}")
    b = x.shape[0]
    p = x.detach().reshape(b, -1).float().clamp(0.0, 1.0)
    if scale != 1.0:
        p = p * scale
    features = p.shape[1]
    if features % 2:
        p = torch.nn.functional.pad(p, (0, 1))        # the unpaired last feature's pair
    p_np = p.cpu().contiguous().numpy()
    ids = (np.arange(b, dtype=np.int64) if rows is None
           else rows.detach().cpu().to(torch.int64).contiguous().numpy())
    if ids.shape != (b,):
        raise InputError(f"rows must hold one id per sample ({b}), got shape {tuple(ids.shape)}")
    out = np.empty((steps, b, p_np.shape[1]), dtype=np.uint8)
    if out.size:
        _rate_kernel(p_np, ids, steps, np.uint64(int(key) & _MASK64), out)
    spikes = torch.from_numpy(out)
    if features % 2:
        spikes = spikes[:, :, :features].contiguous()
    return spikes.reshape(steps, *x.shape).to(x.device)
