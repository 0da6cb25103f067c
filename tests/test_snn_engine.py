"""The multi-step SNN engine: exact synaptic products, the LIF kernel against snntorch, the
counter-based encoder, and every network family simulated layer by layer equal to its step loop
bit for bit (eval and train mode), with surrogate gradients equal to float rounding, on any number
of threads."""
import math

import numpy as np
import pytest
import snntorch
import torch
from snntorch import surrogate

from sramsim.analysis.executors import pinned_threads
from sramsim.nn.models import build
from sramsim.nn.models import diehl_cook as D
from sramsim.nn.models import snn as S
from sramsim.nn.models.diehl_cook import DiehlCook, stdp_delta
from sramsim.nn.snn_engine import encoding as E
from sramsim.nn.snn_engine import lif as L
from sramsim.nn.snn_engine import synapses as Y
from sramsim.nn.snn_engine import wta

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def spikes(shape, p, seed, dtype=torch.uint8):
    return (torch.rand(shape, generator=torch.Generator().manual_seed(seed)) < p).to(dtype)


def weights(shape, seed, scale=0.3):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * scale


# ---------------------------------------------------------------- exact synaptic products

@pytest.mark.parametrize("dtype", [torch.uint8, torch.bool, torch.float32])
def test_linear_kernel_is_the_ordered_sum_for_any_batch(dtype):
    s, w = spikes((37, 50), 0.3, 0, dtype), weights((9, 50), 1)
    out = Y.linear_exact(s, w)
    assert torch.equal(out, Y.linear_torch(s, w))          # the sequential formulation, bit for bit
    rows = torch.cat([Y.linear_exact(s[i:i + 1], w) for i in range(37)])
    assert torch.equal(rows, out)                          # a row alone gives the same bits
    with pinned_threads(2):
        assert torch.equal(Y.linear_exact(s, w), out)
    assert torch.allclose(out, s.float() @ w.t(), atol=1e-5)


def test_conv_kernels_are_the_ordered_sum_and_pool_like_torch():
    s, w = spikes((11, 3, 14, 13), 0.3, 2), weights((5, 3, 5, 5), 3)
    out = Y.conv2d_exact(s, w)
    assert torch.equal(out, Y.conv2d_torch(s, w))
    assert torch.equal(torch.cat([Y.conv2d_exact(s[i:i + 1], w) for i in range(11)]), out)
    assert torch.allclose(out, torch.nn.functional.conv2d(s.float(), w), atol=1e-5)
    pooled, idx = Y.conv_pool_exact(s, w)
    ref, ref_idx = torch.nn.functional.max_pool2d(out, 2, return_indices=True)   # 10x9 -> 5x4
    assert torch.equal(pooled, ref) and torch.equal(idx.long(), ref_idx)
    # ties (an all-zero window: no input spike reaches it) go to the first position, as torch
    zero = torch.zeros(1, 1, 6, 6, dtype=torch.uint8)
    _, zidx = Y.conv_pool_exact(zero, weights((2, 1, 3, 3), 4))
    assert torch.equal(zidx.long(), torch.nn.functional.max_pool2d(
        torch.zeros(1, 2, 4, 4), 2, return_indices=True)[1])
    with pinned_threads(2):
        assert torch.equal(Y.conv_pool_exact(s, w)[0], pooled)


def test_synapse_gradients_match_dense_autograd():
    s = spikes((30, 3, 12, 12), 0.4, 5, torch.float32).requires_grad_()
    w = weights((4, 3, 5, 5), 6).requires_grad_()
    g = weights((30, 4, 4, 4), 7)
    (Y.conv_pool(s, w) * g).sum().backward()
    s2, w2 = s.detach().clone().requires_grad_(), w.detach().clone().requires_grad_()
    (torch.nn.functional.max_pool2d(Y.conv2d(s2, w2), 2) * g).sum().backward()
    for a, b in ((s.grad, s2.grad), (w.grad, w2.grad)):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-5)
    s3, w3 = s.detach().clone().requires_grad_(), w.detach().clone().requires_grad_()
    (torch.nn.functional.max_pool2d(torch.nn.functional.conv2d(s3, w3), 2) * g).sum().backward()
    assert torch.allclose(w.grad, w3.grad, rtol=1e-4, atol=1e-4)
    assert torch.allclose(s.grad, s3.grad, rtol=1e-4, atol=1e-4)
    x = spikes((40, 20), 0.3, 8, torch.float32).requires_grad_()
    wl = weights((6, 20), 9).requires_grad_()
    gl = weights((40, 6), 10)
    (Y.linear(x, wl) * gl).sum().backward()
    assert torch.allclose(wl.grad, gl.t() @ x.detach(), rtol=1e-5, atol=1e-6)
    assert torch.allclose(x.grad, gl @ wl.detach(), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- LIF

def snntorch_loop(cur, beta=0.95):
    lif = snntorch.Leaky(beta=beta, spike_grad=surrogate.fast_sigmoid(slope=25))
    snntorch.SpikingNeuron.instances.remove(lif)
    mem, out = torch.zeros_like(cur[0]), []
    for t in range(cur.shape[0]):
        spk, mem = lif(cur[t], mem)
        out.append(spk)
    return torch.stack(out)


def test_lif_kernel_equals_snntorch_bit_for_bit_and_its_surrogate_gradient():
    cur = weights((30, 7, 33), 11, 0.6)
    cur[3, 0, :5] = 1.0                      # exactly at threshold: no spike (mem - thr > 0)
    beta, thr = torch.tensor(0.95), torch.tensor(1.0)
    ref = snntorch_loop(cur)
    assert ref.sum() > 0
    assert torch.equal(L.lif_forward(cur, beta, thr)[0], ref)
    assert torch.equal(L.lif_torch(cur, beta, thr)[0], ref)
    with pinned_threads(2):
        assert torch.equal(L.lif_forward(cur, beta, thr)[0], ref)
    g = weights(cur.shape, 12)
    a = cur.clone().requires_grad_()
    (L.lif(a, beta, thr, 25) * g).sum().backward()
    b = cur.clone().requires_grad_()
    (snntorch_loop(b) * g).sum().backward()
    assert torch.allclose(a.grad, b.grad, rtol=1e-5, atol=1e-6)
    spk, mem = L.lif_forward(cur, beta, thr, keep_mem=True)
    assert torch.allclose(L.lif_backward_torch(g, mem, beta, thr, 25), a.grad, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- encoding

def test_encoding_is_the_documented_splitmix_stream():
    x = torch.rand(3, 1, 4, 5, generator=torch.Generator().manual_seed(0)) * 1.4 - 0.2
    key = E.key_from_seed(7)
    s = E.rate_spikes(x, 6, key)
    assert s.shape == (6, 3, 1, 4, 5) and s.dtype == torch.uint8
    p = x.reshape(3, -1).clamp(0, 1).numpy()
    for t in range(6):
        for b in range(3):
            for i in range(20):
                z = E._mix64_py(key + ((b * 6 + t) * 10 + i // 2 + 1) * int(E.GAMMA))
                bits = z >> 40 if i % 2 == 0 else (z >> 16) & 0xFFFFFF
                u = np.float32(bits) * np.float32(2.0 ** -24)
                assert int(s[t, b].reshape(-1)[i]) == int(u < p[b, i])
    odd = torch.rand(2, 5, generator=torch.Generator().manual_seed(1))   # 5 features: padded
    assert torch.equal(E.rate_spikes(odd, 3, key), E.rate_spikes(
        torch.nn.functional.pad(odd, (0, 1)), 3, key)[..., :5])
    # a sample keeps its noise alone (rows), and the thread count changes nothing
    assert torch.equal(E.rate_spikes(x[2:], 6, key, rows=torch.tensor([2])), s[:, 2:])
    with pinned_threads(2):
        assert torch.equal(E.rate_spikes(x, 6, key), s)
    assert not torch.equal(E.rate_spikes(x, 6, E.key_from_seed(8)), s)
    assert E.key_from_seed(7, 1) != key


def test_encoding_rate_statistics():
    x = torch.tensor([[0.0, 0.25, 1.0, 2.0]])
    s = E.rate_spikes(x.expand(500, 4), 40, E.key_from_seed(1)).float()
    assert s[..., 0].sum() == 0 and s[..., 2].min() == 1 and s[..., 3].min() == 1
    # 20,000 Bernoulli(0.25) draws: 3 sigma = 3 * sqrt(.25 * .75 / 2e4) ~ 0.0092
    assert abs(float(s[..., 1].mean()) - 0.25) < 0.0092
    half = E.rate_spikes(torch.full((500, 1), 0.5), 40, E.key_from_seed(2), scale=0.25).float()
    assert abs(float(half.mean()) - 0.125) < 3 * math.sqrt(0.125 * 0.875 / 2e4)


# ---------------------------------------------------------------- networks: layer == step

def net(arch, seed=0, size=(16, 16), steps=6, gain=3.0):
    torch.manual_seed(seed)
    model = build(arch, 1, 4, image_size=size)
    model.steps = steps
    with torch.no_grad():                 # strong synapses: an untrained net that fires
        for p in model.parameters():
            p.mul_(gain)
    return model


def both(model, fn):
    out = {}
    for engine in ("layer", "step"):
        model.engine = engine
        out[engine] = fn()
    model.engine = "layer"
    return out["layer"], out["step"]


@pytest.mark.parametrize("arch", ["snn-fc12", "snn-conv3"])
@pytest.mark.parametrize("mode", ["eval", "train"])
def test_layer_engine_equals_step_loop_bit_for_bit(arch, mode):
    model = net(arch).train(mode == "train")
    x = torch.rand(5, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    s = model.encode(x, key=E.key_from_seed(3))
    (counts, recs), (ref_counts, ref_recs) = both(model, lambda: model.simulate(s, record=True))
    assert torch.equal(counts, ref_counts) and counts.sum() > 0
    assert len(recs) == len(ref_recs) == len(model.stages)
    for a, b in zip(recs, ref_recs):
        assert torch.equal(a, b) and a.sum() > 0
    torch.manual_seed(9)
    a = model(x)
    model.engine = "step"
    torch.manual_seed(9)
    assert torch.equal(a, model(x))      # the same draw of the key, the same scores


@pytest.mark.parametrize("arch", ["snn-fc12", "snn-conv3"])
def test_surrogate_gradients_equal_the_step_loop(arch):
    model = net(arch).train()
    x = torch.rand(6, 1, 16, 16, generator=torch.Generator().manual_seed(2))
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    s = model.encode(x, key=E.key_from_seed(4))

    def grads():
        model.zero_grad()
        counts, _ = model.simulate(s)
        torch.nn.functional.cross_entropy(counts * model.score_scale, y).backward()
        return [p.grad.clone() for p in model.parameters()]

    ours, ref = both(model, grads)
    assert any(float(g.abs().max()) > 0 for g in ref)
    for a, b in zip(ours, ref):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("arch", ["snn-fc12", "snn-conv3"])
def test_results_do_not_depend_on_threads_or_chunks(arch, monkeypatch):
    model = net(arch).eval()
    x = torch.rand(9, 1, 16, 16, generator=torch.Generator().manual_seed(3))
    ref = model.forward_spikes(x)
    with pinned_threads(2):
        assert all(torch.equal(a, b) for a, b in zip(model.forward_spikes(x), ref))
    monkeypatch.setattr(S, "CHUNK_ELEMENTS", 1)         # one sample at a time
    assert all(torch.equal(a, b) for a, b in zip(model.forward_spikes(x), ref))
    weights_ = {n: p * 0.5 for n, p in model.named_parameters()}
    swapped = torch.func.functional_call(model, weights_, (x,))
    model.engine = "step"
    assert torch.equal(swapped, torch.func.functional_call(model, weights_, (x,)))


def test_unknown_engine_is_refused():
    model = net("snn-fc4")
    model.engine = "fast"
    with pytest.raises(ValueError, match="engine 'fast'"):
        model(torch.zeros(1, 1, 16, 16))


# ---------------------------------------------------------------- Diehl & Cook

def dc(n=20, steps=40, seed=0):
    torch.manual_seed(seed)
    return DiehlCook(n, 64, 4, time_steps=steps)


def bright(b, seed):
    return torch.rand(b, 1, 8, 8, generator=torch.Generator().manual_seed(seed)) * 3


@pytest.mark.parametrize("learn", [False, True])
@pytest.mark.parametrize("step_chunk", [False, True])
def test_diehl_cook_layer_engine_equals_step_loop(learn, step_chunk, monkeypatch):
    if step_chunk:
        monkeypatch.setattr(D, "STEP_ELEMENTS", 1)     # the currents of one step at a time
    model = dc()
    s = model.encode(bright(12, 0), 40, E.key_from_seed(1))
    start = model.theta.clone()

    def present():
        model.theta.copy_(start)
        rec = model.simulate(s, learn=learn)
        return rec, model.theta.clone()

    (rec, theta), (ref, ref_theta) = both(model, present)
    assert torch.equal(rec.winners, ref.winners) and rec.total() > 12
    assert torch.equal(rec.spikes, ref.spikes) and torch.equal(rec.counts(), ref.counts())
    assert torch.equal(theta, ref_theta)
    if learn:
        assert float(theta.sum()) > 0
        assert torch.allclose(rec.delta_w, ref.delta_w, rtol=1e-5, atol=1e-7)
    else:
        assert torch.equal(theta, start)
    with pinned_threads(2):
        model.theta.copy_(start)
        again = model.simulate(s, learn=learn)
        assert torch.equal(again.winners, rec.winners) and torch.equal(model.theta, theta)
        if learn:
            assert torch.equal(again.delta_w, rec.delta_w)


def test_stdp_sums_hand_worked_and_against_the_trace_products():
    # as test_stdp's hand-worked case: input 0 at t=0, input 1 at t=2; n0 at t=1, n1 at t=2
    s_in = torch.zeros(3, 1, 2, dtype=torch.uint8)
    s_in[0, 0, 0] = s_in[2, 0, 1] = 1
    winners = torch.tensor([[-1], [0], [1]], dtype=torch.int32)
    d = np.float32(math.exp(-1 / 20))
    pot, dep = wta.stdp_sums(s_in.numpy(), winners.numpy(), 2, d)
    assert np.allclose(pot, [[d, 0], [d * d, 1]], rtol=1e-6, atol=0)
    assert np.allclose(dep, [[0, d], [0, 1]], rtol=1e-6, atol=0)
    model = dc()
    s = model.encode(bright(6, 1), 40, E.key_from_seed(2))
    rec = model.simulate(s, learn=True)
    ref = stdp_delta(s.float(), rec.spikes.float())
    assert torch.allclose(rec.delta_w, ref, rtol=1e-5, atol=1e-7)


def test_diehl_cook_counts_do_not_depend_on_chunks(monkeypatch):
    model = dc(steps=30).eval()
    x = bright(10, 3) * 0.1                # faint: some samples are presented again
    counts = model.spike_counts(x)
    monkeypatch.setattr(D, "CHUNK", 3)
    assert torch.equal(model.spike_counts(x), counts)
    model.engine = "step"
    assert torch.equal(model.spike_counts(x), counts)
