"""Synaptic currents of spike inputs, computed the same way whatever the batch: the exact product.

A dense BLAS product is not a function of one row alone: MKL here gives different last bits for a
row computed in a batch of 1, 2 or 5 rows than in a batch of 6,400 (measured: rows of
spikes (B, 784) @ (784, 400) per step vs all T*B rows at once differ for B <= 5), so a step loop
and a simulation over all steps at once would not see the same currents. These primitives define
the current of one output as a sequential float32 sum in a fixed order,
    linear:  y[m, n]       = (((0 + s[m,0] w[n,0]) + s[m,1] w[n,1]) + ...)       (k ascending)
    conv2d:  y[m, o, y, x] = same over (c, ky, kx) ascending of s[m, c, y+ky, x+kx] w[o, c, ky, kx]
(valid convolution, stride 1, no bias), so an output depends on its own row and the weights only:
a row gives the same bits alone, in any batch, on any number of threads, on the CPU kernel or the
torch formulation. For 0/1 spikes and finite weights every product is exact and adding the +-0 of
an inactive input changes nothing, so the numba kernels skip inactive inputs: work scales with the
number of spikes (input spikes of Fashion-MNIST are ~18% dense; Diehl & Cook's ~2%).

Gradients (training): the weight gradient g^T s and the input gradient g w are ordinary dense
products (they need float tolerance only). CPU float32 uses the numba kernels; other devices and
dtypes the torch formulation (one fused multiply-add per input, in the same order).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.grad
from numba import njit, prange


@njit(cache=True, inline="always")
def _axpy_into(acc: np.ndarray, v: np.float32, w: np.ndarray) -> None:
    """acc += v * w over equal-length contiguous slices (vectorised by LLVM; v * w is exact for a
    0/1 spike v, so a fused multiply-add rounds the same)."""
    for n in range(acc.shape[0]):
        acc[n] += v * w[n]


@njit(cache=True, parallel=True)
def _linear_kernel(s: np.ndarray, wt: np.ndarray, out: np.ndarray) -> None:
    """out[m] = sum over k ascending of s[m, k] * wt[k] (rows of wt = inputs), inactive k skipped.
    The active inputs of a row are listed first without a branch (a branch per input
    mispredicts at ~30% density: layer 2 of snn-fc400 took 5.9 instead of 2.6 ms here)."""
    k_count = s.shape[1]
    for m in prange(s.shape[0]):
        active = np.empty(k_count, dtype=np.int64)
        acc = out[m]
        acc[:] = 0
        row = s[m]
        c = 0
        for k in range(k_count):
            active[c] = k
            c += row[k] != 0
        for j in range(c):
            k = active[j]
            _axpy_into(acc, np.float32(row[k]), wt[k])


@njit(cache=True, inline="always")
def _run_axpy(acc: np.ndarray, a0: int, v: np.float32, w: np.ndarray, b0: int, n: int) -> None:
    """acc[a0:a0+n] += v * w[b0:b0+n] (through slices: indexing with offsets kept numba from
    vectorising, measured 4-5x slower)."""
    _axpy_into(acc[a0:a0 + n], v, w[b0:b0 + n])


@njit(cache=True, inline="always")
def _tap_runs(img: np.ndarray, kh: int, kw: int, ho: int, wo: int, o_count: int,
              out: np.ndarray, other: np.ndarray, weights_out: bool) -> None:
    """For every active input (c, y, x) of one image (C, H, W), in raster order, and every kernel
    row ky: the outputs (y - ky, x - kx) it reaches and their weights (c, ky, kx) are two
    contiguous runs when outputs are flat channels-last (Ho * Wo * O) and weights flat (C, kh,
    kw reversed, O). weights_out=False: out (outputs) += v * other (weights), the convolution;
    True: out (weights) += v * other (output gradients), the weight gradient."""
    c_count, h, w = img.shape
    for c in range(c_count):
        for y in range(h):
            ky0, ky1 = max(0, y - ho + 1), min(kh, y + 1)
            for x in range(w):
                v = img[c, y, x]
                if v == 0:
                    continue
                kx0, kx1 = max(0, x - wo + 1), min(kw, x + 1)
                n = (kx1 - kx0) * o_count
                col0 = x - (kx1 - 1)
                for ky in range(ky0, ky1):
                    at_out = ((y - ky) * wo + col0) * o_count
                    at_w = ((c * kh + ky) * kw + kw - kx1) * o_count
                    if weights_out:
                        _run_axpy(out, at_w, np.float32(v), other, at_out, n)
                    else:
                        _run_axpy(out, at_out, np.float32(v), other, at_w, n)


@njit(cache=True, inline="always")
def _conv_image(img: np.ndarray, wf: np.ndarray, kh: int, kw: int, acc: np.ndarray) -> None:
    """acc (Ho * Wo * O, flat channels-last) = exact valid convolution of one image (C, H, W).

    wf: the weights as (C, kh, kw, O) with kx reversed, flattened. Scatter form: every active
    input (c, y, x), in raster order, adds its weights to the outputs it reaches; an output
    (oy, ox) thereby receives its terms in (c, ky, kx) ascending order (see _tap_runs)."""
    c_count, h, w = img.shape
    o_count = wf.shape[0] // (c_count * kh * kw)
    acc[:] = 0
    _tap_runs(img, kh, kw, h - kh + 1, w - kw + 1, o_count, acc, wf, False)


@njit(cache=True, parallel=True)
def _conv_kernel(s: np.ndarray, wf: np.ndarray, kh: int, kw: int, out: np.ndarray) -> None:
    """Valid stride-1 convolution of s (M, C, H, W) into out (M, Ho * Wo * O) (see _conv_image)."""
    for m in prange(s.shape[0]):
        _conv_image(s[m], wf, kh, kw, out[m])


@njit(cache=True, inline="always")
def _pool_window(r0: np.ndarray, r1: np.ndarray, r2: np.ndarray, r3: np.ndarray, p0: int,
                 wo: int, best: np.ndarray, at: np.ndarray) -> None:
    """2x2 maximum of four channel vectors (raster order), as torch's CPU max_pool2d picks it:
    from the first value, a later one wins if greater or NaN; `at` gets its flat position."""
    for o in range(best.shape[0]):
        b, k = r0[o], p0
        v = r1[o]
        t = (v > b) | (v != v)
        b, k = (v, p0 + 1) if t else (b, k)
        v = r2[o]
        t = (v > b) | (v != v)
        b, k = (v, p0 + wo) if t else (b, k)
        v = r3[o]
        t = (v > b) | (v != v)
        b, k = (v, p0 + wo + 1) if t else (b, k)
        best[o] = b
        at[o] = k


@njit(cache=True, parallel=True)
def _conv_pool_kernel(s: np.ndarray, wf: np.ndarray, kh: int, kw: int, out: np.ndarray,
                      idx: np.ndarray) -> None:
    """Exact convolution, then 2x2 max pooling with stride 2: out (M, O, Hp, Wp) and idx (int32),
    the flat position y * Wo + x in the convolution output of each maximum (as torch's indices).
    Pooling runs on channels-last buffers of one image (vectorised), then transposes."""
    m_count, _, h, w = s.shape
    o_count = out.shape[1]
    ho, wo = h - kh + 1, w - kw + 1
    hp, wp = out.shape[2], out.shape[3]
    for m in prange(m_count):
        acc = np.empty(ho * wo * o_count, dtype=np.float32)
        best = np.empty(hp * wp * o_count, dtype=np.float32)
        at = np.empty(hp * wp * o_count, dtype=np.int32)
        _conv_image(s[m], wf, kh, kw, acc)
        for py in range(hp):
            for px in range(wp):
                p0 = (2 * py) * wo + 2 * px
                q = (py * wp + px) * o_count
                _pool_window(acc[p0 * o_count:(p0 + 1) * o_count],
                             acc[(p0 + 1) * o_count:(p0 + 2) * o_count],
                             acc[(p0 + wo) * o_count:(p0 + wo + 1) * o_count],
                             acc[(p0 + wo + 1) * o_count:(p0 + wo + 2) * o_count],
                             p0, wo, best[q:q + o_count], at[q:q + o_count])
        om = out[m].reshape(o_count, hp * wp)
        im = idx[m].reshape(o_count, hp * wp)
        for q in range(hp * wp):
            for o in range(o_count):
                om[o, q] = best[q * o_count + o]
                im[o, q] = at[q * o_count + o]


def _flipped(w: torch.Tensor) -> np.ndarray:
    """Conv weights (O, C, kh, kw) as the flat (C, kh, kw reversed, O) array of _conv_image."""
    return w.detach().flip(3).permute(1, 2, 3, 0).contiguous().numpy().reshape(-1)


def _use_kernels(s: torch.Tensor, w: torch.Tensor) -> bool:
    return s.device.type == "cpu" and w.device.type == "cpu" and w.dtype == torch.float32


def _spikes_array(s: torch.Tensor) -> np.ndarray:
    """A contiguous numpy view of spikes (uint8 or float32 kept; other dtypes as float32)."""
    s = s.detach()
    if s.dtype == torch.bool:
        s = s.view(torch.uint8)
    elif s.dtype not in (torch.uint8, torch.float32):
        s = s.float()
    return s.contiguous().numpy()


def linear_exact(s: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """y = s @ w.T in the exact order (module docstring); s (M, K) spikes, w (N, K). No autograd."""
    w = w.detach()
    if _use_kernels(s, w):
        out = np.empty((s.shape[0], w.shape[0]), dtype=np.float32)
        if out.size:
            _linear_kernel(_spikes_array(s), w.t().contiguous().numpy(), out)
        return torch.from_numpy(out)
    return linear_torch(s, w)


def linear_torch(s: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """linear_exact as torch ops (any device, dtype): one multiply-add per input, in order."""
    s, w = s.detach().to(w.dtype), w.detach()
    out = torch.zeros((s.shape[0], w.shape[0]), dtype=w.dtype, device=w.device)
    for k in range(s.shape[1]):
        out.addcmul_(s[:, k:k + 1], w[:, k])
    return out


def conv2d_exact(s: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Valid stride-1 conv2d without bias in the exact order; s (M, C, H, W), w (O, C, kh, kw)."""
    w = w.detach()
    o, c, kh, kw = w.shape
    m, _, h, wd = s.shape
    ho, wo = h - kh + 1, wd - kw + 1
    if _use_kernels(s, w):
        out = np.empty((m, ho * wo * o), dtype=np.float32)
        if out.size:
            _conv_kernel(_spikes_array(s), _flipped(w), kh, kw, out)
        return torch.from_numpy(out).reshape(m, ho, wo, o).permute(0, 3, 1, 2).contiguous()
    return conv2d_torch(s, w)


def conv2d_torch(s: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """conv2d_exact as torch ops (any device, dtype): one multiply-add per (c, ky, kx), in order."""
    s, w = s.detach().to(w.dtype), w.detach()
    o, c, kh, kw = w.shape
    ho, wo = s.shape[2] - kh + 1, s.shape[3] - kw + 1
    out = torch.zeros((s.shape[0], o, ho, wo), dtype=w.dtype, device=w.device)
    for ci in range(c):
        for ky in range(kh):
            for kx in range(kw):
                out.addcmul_(s[:, ci:ci + 1, ky:ky + ho, kx:kx + wo],
                             w[:, ci, ky, kx].view(1, o, 1, 1))
    return out


def conv_pool_exact(s: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(max_pool2d(conv2d_exact(s, w), 2), the indices torch's max_pool2d would return (int32 on
    the CPU)) in one pass on the CPU (no (M, O, Ho, Wo) intermediate); elsewhere the two ops."""
    w = w.detach()
    o, _, kh, kw = w.shape
    m, _, h, wd = s.shape
    ho, wo = h - kh + 1, wd - kw + 1
    if _use_kernels(s, w):
        out = np.empty((m, o, ho // 2, wo // 2), dtype=np.float32)
        idx = np.empty(out.shape, dtype=np.int32)
        if out.size:
            _conv_pool_kernel(_spikes_array(s), _flipped(w), kh, kw, out, idx)
        return torch.from_numpy(out), torch.from_numpy(idx)
    return torch.nn.functional.max_pool2d(conv2d_exact(s, w), 2, return_indices=True)


CHUNKS = 64          # fixed split of a batch for gradient partial sums (any thread count)


@njit(cache=True, parallel=True)
def _conv_pool_grad_kernel(s: np.ndarray, wk: np.ndarray, kh: int, kw: int, idx: np.ndarray,
                           g: np.ndarray, want_s: bool, gw_parts: np.ndarray,
                           gs: np.ndarray) -> None:
    """Backward of conv_pool on the CPU, from the pooled gradient g (M, O, Hp, Wp) and the
    maxima's positions idx: the weight gradient as per-chunk partial sums gw_parts (CHUNKS,
    C * kh * kw * O, kx reversed as in _conv_image; the caller sums them in chunk order) and, if
    want_s, the input gradient gs (M, C, H, W). wk: the weights as (O, kh, kw, C), flat. The
    convolution-output gradient (nonzero at the maxima only) lives per image in a small
    channels-last buffer; the weight gradient visits only the active inputs of s."""
    m_count, c_count, h, w = s.shape
    o_count = g.shape[1]
    ho, wo = h - kh + 1, w - kw + 1
    hp, wp = g.shape[2], g.shape[3]
    per = (m_count + CHUNKS - 1) // CHUNKS
    for ch in prange(CHUNKS):
        part = gw_parts[ch]
        part[:] = 0
        gconv = np.zeros(ho * wo * o_count, dtype=np.float32)
        gimg = np.zeros(h * w * c_count, dtype=np.float32)
        for m in range(ch * per, min(m_count, (ch + 1) * per)):
            gconv[:] = 0
            for o in range(o_count):
                for py in range(hp):
                    for px in range(wp):
                        gconv[idx[m, o, py, px] * o_count + o] = g[m, o, py, px]
            _tap_runs(s[m], kh, kw, ho, wo, o_count, part, gconv, True)
            if want_s:
                gimg[:] = 0
                for o in range(o_count):
                    for py in range(hp):
                        for px in range(wp):
                            gp = g[m, o, py, px]
                            if gp == 0:
                                continue
                            at = idx[m, o, py, px]
                            oy, ox = at // wo, at % wo
                            for ky in range(kh):
                                _run_axpy(gimg, ((oy + ky) * w + ox) * c_count, gp, wk,
                                          ((o * kh + ky) * kw) * c_count, kw * c_count)
                for c in range(c_count):
                    for y in range(h):
                        for x in range(w):
                            gs[m, c, y, x] = gimg[(y * w + x) * c_count + c]


def _conv_pool_grads(s: torch.Tensor, w: torch.Tensor, idx: torch.Tensor, g: torch.Tensor,
                     want_s: bool, want_w: bool) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(gradient at s or None, gradient at w or None) of conv_pool, from the pooled gradient g."""
    ho, wo = s.shape[2] - w.shape[2] + 1, s.shape[3] - w.shape[3] + 1
    if not (_use_kernels(s, w) and g.dtype == torch.float32):
        g = torch.nn.functional.max_unpool2d(g, idx.to(g.device, torch.int64), (2, 2), (2, 2),
                                             output_size=(ho, wo))
        gs = torch.nn.grad.conv2d_input(s.shape, w, g) if want_s else None
        gw = torch.nn.grad.conv2d_weight(s.to(g.dtype), w.shape, g) if want_w else None
        return gs, gw
    o, c, kh, kw = w.shape
    parts = np.empty((CHUNKS, c * kh * kw * o), dtype=np.float32)
    gs_np = np.empty(tuple(s.shape) if want_s else (1, 1, 1, 1), dtype=np.float32)
    _conv_pool_grad_kernel(_spikes_array(s),
                           w.detach().permute(0, 2, 3, 1).contiguous().numpy().reshape(-1), kh, kw,
                           idx.numpy(), g.contiguous().numpy(), want_s, parts, gs_np)
    gw = None
    if want_w:
        gw = torch.from_numpy(_chunk_sum(parts)).reshape(c, kh, kw, o).flip(2).permute(3, 0, 1, 2)
    return (torch.from_numpy(gs_np) if want_s else None), gw


@njit(cache=True)
def _chunk_sum(parts: np.ndarray) -> np.ndarray:
    """parts.sum(0) in chunk order (a fixed order, whatever the thread count)."""
    out = parts[0].copy()
    for ch in range(1, parts.shape[0]):
        out += parts[ch]
    return out


class _Linear(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, s: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(s, w)
        return linear_exact(s, w).to(w.device)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        s, w = ctx.saved_tensors
        gs = g @ w if ctx.needs_input_grad[0] else None
        # dense (MKL): at the ~28% input spike density of Fashion-MNIST a sparse pass was
        # slower (80 vs 50 ms for 3,200 x 784 x 400 here)
        gw = g.t() @ s.to(g.dtype) if ctx.needs_input_grad[1] else None
        return gs, gw


class _Conv2d(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, s: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(s, w)
        return conv2d_exact(s, w).to(w.device)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        s, w = ctx.saved_tensors
        return _conv_grads(ctx, s, w, g)


class _ConvPool(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, s: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        out, idx = conv_pool_exact(s, w)
        ctx.save_for_backward(s, w, idx)
        return out.to(w.device)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        s, w, idx = ctx.saved_tensors
        return _conv_pool_grads(s, w, idx, g, ctx.needs_input_grad[0], ctx.needs_input_grad[1])


def _conv_grads(ctx: Any, s: torch.Tensor, w: torch.Tensor,
                g: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    gs = torch.nn.grad.conv2d_input(s.shape, w, g) if ctx.needs_input_grad[0] else None
    gw = (torch.nn.grad.conv2d_weight(s.to(g.dtype), w.shape, g)
          if ctx.needs_input_grad[1] else None)
    return gs, gw


def _grad_needed(s: torch.Tensor, w: torch.Tensor) -> bool:
    return torch.is_grad_enabled() and (s.requires_grad or w.requires_grad)


def linear(s: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """`linear_exact` with autograd (gradients to s and w)."""
    return _Linear.apply(s, w) if _grad_needed(s, w) else linear_exact(s, w).to(w.device)


def conv2d(s: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """`conv2d_exact` with autograd (dense gradients to s and w)."""
    return _Conv2d.apply(s, w) if _grad_needed(s, w) else conv2d_exact(s, w).to(w.device)


def conv_pool(s: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """max_pool2d(conv2d_exact(s, w), 2) with autograd (the gradient goes to each maximum)."""
    return _ConvPool.apply(s, w) if _grad_needed(s, w) else conv_pool_exact(s, w)[0].to(w.device)


def _poolable(mod: torch.nn.Module) -> bool:
    """A MaxPool2d the fused conv_pool computes: 2x2, stride 2, no padding, floor mode."""
    def pair(v: int | tuple[int, ...] | list[int]) -> tuple[int, ...]:
        return tuple(v) if isinstance(v, (tuple, list)) else (v, v)
    return (isinstance(mod, torch.nn.MaxPool2d) and pair(mod.kernel_size) == (2, 2)
            and pair(mod.stride) == (2, 2) and pair(mod.padding) == (0, 0)
            and pair(mod.dilation) == (1, 1) and not mod.ceil_mode and not mod.return_indices)


def stage_current(stage: torch.nn.Module, s: torch.Tensor, fused: bool = True) -> torch.Tensor:
    """Apply one synaptic stage (a Linear, a Conv2d, or an nn.Sequential of them with Flatten /
    MaxPool2d) to spikes `s` of any batch size, with the exact products for Linear and Conv2d.
    fused: a Conv2d followed by a 2x2 MaxPool2d runs as one `conv_pool` (the same values)."""
    mods = list(stage) if isinstance(stage, torch.nn.Sequential) else [stage]
    i = 0
    while i < len(mods):
        mod = mods[i]
        if isinstance(mod, torch.nn.Linear):
            _check_plain(mod)
            s = linear(s, mod.weight)
        elif isinstance(mod, torch.nn.Conv2d):
            _check_plain(mod)
            if (mod.stride != (1, 1) or mod.padding != (0, 0) or mod.dilation != (1, 1)
                    or mod.groups != 1):
                raise NotImplementedError("exact conv2d supports stride 1, no padding, no dilation "
                                          "and one group")
            if fused and i + 1 < len(mods) and _poolable(mods[i + 1]):
                s = conv_pool(s, mod.weight)
                i += 1
            else:
                s = conv2d(s, mod.weight)
        else:
            s = mod(s)
        i += 1
    return s


def _check_plain(mod: torch.nn.Module) -> None:
    if getattr(mod, "bias", None) is not None:
        raise NotImplementedError(f"exact synapses take no bias ({type(mod).__name__})")


__all__ = ["linear", "conv2d", "conv_pool", "linear_exact", "conv2d_exact", "conv_pool_exact",
           "linear_torch", "conv2d_torch", "stage_current"]
