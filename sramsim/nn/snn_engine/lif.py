"""A layer of leaky integrate-and-fire neurons over all time steps at once, as snntorch.Leaky.

For input currents I (T, ...) the recurrence is snntorch 1.0's `Leaky` with its defaults (reset by
subtraction, reset_delay=True, graded_spikes_factor 1, no state quantisation), float op for float op
in float32:
    reset_t = [mem_{t-1} - thr > 0]                    (detached; mem_{-1} = 0)
    mem_t   = (beta * mem_{t-1} + I_t) - reset_t * thr  (beta already clamped to [0, 1])
    spk_t   = [mem_t - thr > 0]
so given the same currents the spikes equal a step loop over `snntorch.Leaky` bit for bit. The CPU
forward is one numba kernel (parallel over neurons, each neuron's steps in order, so the thread
count changes nothing); other devices run the same ops as a torch loop.

Backward (surrogate gradient, snntorch's `fast_sigmoid(slope)`): with g_t the gradient at spk_t,
    d_t = g_t / (slope * |mem_t - thr| + 1)^2 + beta * d_{t+1}        (d_T = 0)
is the gradient at mem_t and at I_t (the reset term is detached, as in snntorch): equal to
autograd through the step loop up to float rounding (its sums run in another order).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from numba import njit, prange

BLOCK = 4096      # neurons per parallel work item


@njit(cache=True, inline="always")
def _lif_step(mem: np.ndarray, cur: np.ndarray, beta: np.float32, thr: np.float32,
              spk: np.ndarray) -> None:
    """One step for a contiguous slice of neurons (the float ops of snntorch.Leaky, in order)."""
    one, zero = np.float32(1.0), np.float32(0.0)
    for j in range(mem.shape[0]):
        m = mem[j]
        reset = one if m - thr > zero else zero
        m = (beta * m + cur[j]) - reset * thr
        mem[j] = m
        spk[j] = one if m - thr > zero else zero


@njit(cache=True, parallel=True)
def _lif_kernel(cur: np.ndarray, beta: np.float32, thr: np.float32, spk: np.ndarray,
                mem_out: np.ndarray, keep: bool) -> None:
    """cur (T, P) -> spk (T, P); mem_out (T, P) receives every mem_t when `keep`."""
    steps, p = cur.shape
    for blk in prange((p + BLOCK - 1) // BLOCK):
        a = blk * BLOCK
        b = min(p, a + BLOCK)
        mem = np.zeros(b - a, dtype=np.float32)
        for t in range(steps):
            _lif_step(mem, cur[t, a:b], beta, thr, spk[t, a:b])
            if keep:
                mem_out[t, a:b] = mem


def lif_forward(cur: torch.Tensor, beta: torch.Tensor, thr: torch.Tensor,
                keep_mem: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(spikes (T, ...) float 0/1, the membrane potentials (T, ...) if keep_mem) for currents
    `cur` (T, ...); beta (clamped to [0, 1]) and thr are scalars (0-dim tensors)."""
    cur = cur.detach()
    if cur.device.type == "cpu" and cur.dtype == torch.float32:
        c2 = cur.contiguous().reshape(cur.shape[0], -1).numpy()
        spk = np.empty_like(c2)
        mem = np.empty_like(c2) if keep_mem else np.empty((1, 1), dtype=np.float32)
        if c2.size:
            _lif_kernel(c2, np.float32(beta.item()), np.float32(thr.item()), spk, mem, keep_mem)
        spikes = torch.from_numpy(spk).reshape(cur.shape)
        return spikes, torch.from_numpy(mem).reshape(cur.shape) if keep_mem else None
    return lif_torch(cur, beta, thr, keep_mem)


def lif_torch(cur: torch.Tensor, beta: torch.Tensor, thr: torch.Tensor,
              keep_mem: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """lif_forward as a torch loop over the steps (any device and dtype)."""
    cur = cur.detach()
    beta, thr = beta.to(cur.dtype), thr.to(cur.dtype)
    mem = torch.zeros_like(cur[0])
    spikes = torch.empty_like(cur)
    mems = torch.empty_like(cur) if keep_mem else None
    for t in range(cur.shape[0]):
        reset = (mem - thr > 0).to(cur.dtype)
        mem = (beta * mem + cur[t]) - reset * thr
        spikes[t] = (mem - thr > 0).to(cur.dtype)
        if mems is not None:                    # keep_mem
            mems[t] = mem
    return spikes, mems


@njit(cache=True, inline="always")
def _grad_step(d: np.ndarray, g: np.ndarray, mem: np.ndarray, nxt: np.ndarray, beta: np.float32,
               thr: np.float32, slope: np.float32) -> None:
    """d = g / (slope * |mem - thr| + 1)^2 + beta * nxt over contiguous slices."""
    one = np.float32(1.0)
    for j in range(d.shape[0]):
        q = slope * abs(mem[j] - thr) + one
        d[j] = g[j] / (q * q) + beta * nxt[j]


@njit(cache=True, parallel=True)
def _lif_grad_kernel(g: np.ndarray, mem: np.ndarray, beta: np.float32, thr: np.float32,
                     slope: np.float32, d: np.ndarray) -> None:
    """The gradient d (T, P) at the currents from the gradient g (T, P) at the spikes."""
    steps, p = g.shape
    for blk in prange((p + BLOCK - 1) // BLOCK):
        a = blk * BLOCK
        b = min(p, a + BLOCK)
        nxt = np.zeros(b - a, dtype=np.float32)
        for t in range(steps - 1, -1, -1):
            _grad_step(d[t, a:b], g[t, a:b], mem[t, a:b], nxt, beta, thr, slope)
            nxt = d[t, a:b]


def lif_backward(g: torch.Tensor, mem: torch.Tensor, beta: torch.Tensor, thr: torch.Tensor,
                 slope: float) -> torch.Tensor:
    """Gradient at the currents (T, ...) from the gradient `g` at the spikes (module docstring)."""
    if g.device.type == "cpu" and g.dtype == torch.float32 and mem.dtype == torch.float32:
        g2 = g.contiguous().reshape(g.shape[0], -1).numpy()
        d = np.empty_like(g2)
        if d.size:
            _lif_grad_kernel(g2, mem.reshape(g2.shape).numpy(), np.float32(beta.item()),
                             np.float32(thr.item()), np.float32(slope), d)
        return torch.from_numpy(d).reshape(g.shape)
    return lif_backward_torch(g, mem, beta, thr, slope)


def lif_backward_torch(g: torch.Tensor, mem: torch.Tensor, beta: torch.Tensor,
                       thr: torch.Tensor, slope: float) -> torch.Tensor:
    """lif_backward as torch ops (any device and dtype)."""
    d = g / (slope * torch.abs(mem - thr) + 1.0) ** 2
    for t in range(d.shape[0] - 2, -1, -1):
        d[t] += beta * d[t + 1]
    return d


class _LIF(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, cur: torch.Tensor, beta: torch.Tensor, thr: torch.Tensor,
                slope: float) -> torch.Tensor:
        spikes, mem = lif_forward(cur, beta, thr, keep_mem=True)
        ctx.save_for_backward(mem, beta, thr)
        ctx.slope = slope
        return spikes

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor, None, None, None]:
        mem, beta, thr = ctx.saved_tensors
        return lif_backward(g, mem, beta, thr, ctx.slope), None, None, None


def lif(cur: torch.Tensor, beta: torch.Tensor, thr: torch.Tensor, slope: float) -> torch.Tensor:
    """Spikes (T, ...) of LIF neurons driven by `cur` (T, ...), with the fast-sigmoid surrogate
    gradient of slope `slope` when `cur` requires grad (see the module docstring)."""
    beta = beta.detach().clamp(0, 1)
    thr = thr.detach()
    if torch.is_grad_enabled() and cur.requires_grad:
        return _LIF.apply(cur, beta, thr, float(slope))
    return lif_forward(cur, beta, thr)[0].to(cur.device)
