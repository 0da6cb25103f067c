"""Kernels of the Diehl & Cook (2015) network: the excitatory winner-take-all dynamics over all
time steps of a presentation, and the batch-summed PostPre STDP change of one presentation.

The semantics (constants, update order) are `sramsim.nn.models.diehl_cook`'s; these kernels run
them float op for float op in float32 as its torch reference loop does (`DiehlCook.engine =
"step"`), so given the same currents they give the same spikes and the same theta bit for bit.
A presentation's spikes are held as `winners` (T, B) int32: the neuron that spiked at step t in
sample b, or -1 (at most one neuron spikes per sample and step).

Without learning the samples are independent (theta is fixed): one work item per sample. With
learning theta couples the batch (it rises by the spikes of all samples at a step): the steps run
in order, the samples of a step in parallel, and the per-neuron spike counts of a step are summed
afterwards (integers: the order cannot matter).
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(cache=True, inline="always")
def _sample_step(v: np.ndarray, refrac: np.ndarray, over: np.ndarray, cur: np.ndarray,
                 theta: np.ndarray, prev: int, params: tuple, crossed: np.ndarray) -> int:
    """One step of one sample: v, refrac updated in place, `over` = v - (thresh + theta) before the
    reset, crossed[n] = over >= 0; returns the winner (largest overshoot, first on ties, NaN
    first) or -1 when it did not cross. params: (rest, reset, thresh, refrac_steps, decay, inh)."""
    rest, reset, thresh, refrac_steps, decay, inh = params
    one, zero = np.float32(1.0), np.float32(0.0)
    s_sum = one if prev >= 0 else zero
    for n in range(v.shape[0]):
        vn = rest + (v[n] - rest) * decay
        inhibition = inh * (s_sum - (one if n == prev else zero))
        vn = vn + (one if refrac[n] <= zero else zero) * (cur[n] - inhibition)
        r = refrac[n] - one
        o = vn - (thresh + theta[n])
        c = o >= zero
        v[n] = reset if c else vn
        refrac[n] = refrac_steps if c else r
        over[n] = o
        crossed[n] = c
    best = 0
    for n in range(1, over.shape[0]):
        x, b = over[n], over[best]
        if x > b or (x != x and b == b):
            best = n
    return best if crossed[best] else -1


def new_state(batch: int, n: int, rest: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The state before a presentation: v = rest, refractory counters 0, no previous spike."""
    return (np.full((batch, n), rest, dtype=np.float32), np.zeros((batch, n), dtype=np.float32),
            np.full(batch, -1, dtype=np.int32))


@njit(cache=True, parallel=True)
def wta_eval(cur: np.ndarray, theta: np.ndarray, params: tuple, v: np.ndarray,
             refrac: np.ndarray, prev: np.ndarray, winners: np.ndarray) -> None:
    """Dynamics without learning over the steps of cur (T, B, N) float32 -> winners (T, B) int32,
    continuing from the state (v, refrac (B, N), prev (B,)), which is left after the last step
    (so a presentation can run in chunks of steps)."""
    steps, batch, n = cur.shape
    for b in prange(batch):
        over = np.empty(n, dtype=np.float32)
        crossed = np.empty(n, dtype=np.bool_)
        last = prev[b]
        for t in range(steps):
            last = _sample_step(v[b], refrac[b], over, cur[t, b], theta, last, params, crossed)
            winners[t, b] = last
        prev[b] = last


@njit(cache=True, parallel=True)
def wta_learn(cur: np.ndarray, theta: np.ndarray, params: tuple, theta_decay: float,
              theta_plus: float, v: np.ndarray, refrac: np.ndarray, prev: np.ndarray,
              winners: np.ndarray) -> None:
    """Dynamics with the adaptive threshold learning: as wta_eval, and theta (N,) is updated in
    place: every step it decays by theta_decay, then rises by theta_plus times the number of
    samples whose neuron crossed its threshold at that step."""
    steps, batch, n = cur.shape
    over = np.empty((batch, n), dtype=np.float32)
    crossed = np.empty((batch, n), dtype=np.bool_)
    for t in range(steps):
        for j in range(n):
            theta[j] = theta[j] * theta_decay
        for b in prange(batch):
            prev[b] = _sample_step(v[b], refrac[b], over[b], cur[t, b], theta, prev[b], params,
                                   crossed[b])
            winners[t, b] = prev[b]
        for j in prange(n):
            count = 0
            for b in range(batch):
                count += crossed[b, j]
            theta[j] = theta[j] + theta_plus * np.float32(count)


@njit(cache=True)
def _powers(decay: float, steps: int) -> np.ndarray:
    """p[k] = 1.0 multiplied k times by decay in float32: a trace k steps after its last spike
    (the exact values of the step-by-step update x <- x * decay)."""
    p = np.empty(steps + 1, dtype=np.float32)
    p[0] = 1.0
    for k in range(1, steps + 1):
        p[k] = p[k - 1] * decay
    return p


@njit(cache=True, inline="always")
def _mark(row: np.ndarray, lp: np.ndarray, t: int) -> None:
    """lp[i] = t where input i spikes (vectorised select)."""
    for i in range(row.shape[0]):
        lp[i] = t if row[i] != 0 else lp[i]


@njit(cache=True, inline="always")
def _add_trace(target: np.ndarray, lp: np.ndarray, pw: np.ndarray, t: int) -> None:
    """target[i] += the trace x_pre(t) of input i: pw[t - lp[i]], 0 before its first spike."""
    for i in range(target.shape[0]):
        target[i] += pw[t - lp[i]] if lp[i] >= 0 else np.float32(0.0)


@njit(cache=True, inline="always")
def _add_where(target: np.ndarray, row: np.ndarray, x: np.float32) -> None:
    """target[i] += x where input i spikes (+0 elsewhere: no change, as all terms are >= 0)."""
    for i in range(target.shape[0]):
        target[i] += x if row[i] != 0 else np.float32(0.0)


@njit(cache=True)
def stdp_sums(s_in: np.ndarray, winners: np.ndarray, n_neurons: int,
              decay: float) -> tuple[np.ndarray, np.ndarray]:
    """(potentiation, depression), each (N, I) float32, of BindsNET's PostPre rule summed over
    the batch and the steps: potentiation[n] += x_pre(t, b) at every spike of neuron n,
    depression[:, i] += x_post(t, b) at every input spike i; the traces are 1 at a spike and
    decay by `decay` per step. Only nonzero terms are visited: the post trace of a sample is
    nonzero only for the neurons that have spiked in it, and each trace value is a table
    lookup (the step-by-step products). The sums run over (t, b) in order, serially: the same
    bits on any thread count."""
    steps, batch, n_inputs = s_in.shape
    pw = _powers(decay, steps)
    last_pre = np.full((batch, n_inputs), -1, dtype=np.int64)
    last_post = np.full((batch, n_neurons), -1, dtype=np.int64)
    fired = np.empty((batch, steps), dtype=np.int64)     # distinct neurons spiked so far
    n_fired = np.zeros(batch, dtype=np.int64)
    pot = np.zeros((n_neurons, n_inputs), dtype=np.float32)
    dep = np.zeros((n_neurons, n_inputs), dtype=np.float32)
    for t in range(steps):
        for b in range(batch):
            row = s_in[t, b]
            _mark(row, last_pre[b], t)
            w = winners[t, b]
            if w >= 0:
                if last_post[b, w] < 0:
                    fired[b, n_fired[b]] = w
                    n_fired[b] += 1
                last_post[b, w] = t
                _add_trace(pot[w], last_pre[b], pw, t)
            for f in range(n_fired[b]):
                j = fired[b, f]
                _add_where(dep[j], row, pw[t - last_post[b, j]])
    return pot, dep
