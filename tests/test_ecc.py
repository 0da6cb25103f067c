"""ECC (SECDED (72,64) and (13,8)) against a plain bit-by-bit reference encoder/decoder: every
single and every double error position of a codeword exactly, random multi-error words (property
test), stuck-at faults, chips smaller than the stored image, thread-count independence, and the
fraction of uncorrectable words at BER 1% against the binomial law."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from sramsim.analysis.executors import Execution
from sramsim.inject.layout import MemoryLayout
from sramsim import BerCurve, Chip, Faults, Geometry, QuantizedModel, RandomBitErrors
from sramsim.errors import InputError
from sramsim.inject import ecc
from conftest import naive_apply, small_world

K_R = {"secded72": (64, 8), "secded13": (8, 5)}


# ------------------------------------------------------------------------------ the reference

def ref_positions(k: int) -> list[int]:
    """Hamming positions of the k data bits: 3, 5, 6, 7, 9, ... (not powers of two)."""
    out, p = [], 3
    while len(out) < k:
        if p & (p - 1):
            out.append(p)
        p += 1
    return out


def ref_encode_word(bits: list[int], k: int, r: int) -> list[int]:
    """k data bits -> k + r stored bits: data, Hamming parity p1, p2, p4, ..., overall parity."""
    pos = ref_positions(k)
    checks = []
    for t in range(r - 1):
        checks.append(sum(b for b, p in zip(bits, pos) if p >> t & 1) % 2)
    overall = (sum(bits) + sum(checks)) % 2
    return bits + checks + [overall]


def ref_decode_word(word: list[int], k: int, r: int) -> tuple[list[int], str]:
    """(data bits, 'ok' | 'corrected' | 'detected') as a SECDED decoder reads the word."""
    pos = ref_positions(k)
    data, checks = list(word[:k]), word[k:k + r - 1]
    s = 0
    for b, p in zip(data, pos):
        if b:
            s ^= p
    for t, b in enumerate(checks):
        if b:
            s ^= 1 << t
    odd = sum(word) % 2
    if not odd:
        return data, ("ok" if s == 0 else "detected")
    if s == 0 or s in [1 << t for t in range(r - 1)]:
        return data, "corrected"            # the error sat in a check bit
    if s in pos:
        data[pos.index(s)] ^= 1
        return data, "corrected"
    return data, "detected"                 # the syndrome names no position of the code


def bits_of(stream: np.ndarray, start: int, n: int) -> list[int]:
    return [int(stream[(start + i) // 8] >> ((start + i) % 8) & 1) for i in range(n)]


def ref_encode(name: str, data: np.ndarray) -> np.ndarray:
    """The stored image, bit by bit, as the module's docstring lays it out."""
    k, r = K_R[name]
    n = k + r
    words = -(-data.size // 64) * 64 * 8 // k          # padded to whole 64-byte blocks
    padded = np.zeros(words * k // 8, dtype=np.uint8)
    padded[:data.size] = data
    out = np.zeros(words * n // 8, dtype=np.uint8)
    for w in range(words):
        for i, b in enumerate(ref_encode_word(bits_of(padded, w * k, k), k, r)):
            out[(w * n + i) // 8] |= b << ((w * n + i) % 8)
    return out


def ref_read(name: str, stored: np.ndarray, clean: np.ndarray, data: np.ndarray, zero: np.ndarray,
             policy: str) -> tuple[np.ndarray, dict]:
    """Data image and counts, decoding every codeword bit by bit."""
    k, r = K_R[name]
    n = k + r
    out = np.zeros(stored.size * 8 // n * k // 8, dtype=np.uint8)
    counts = dict.fromkeys(("faulty_words", "corrected", "detected", "miscorrected"), 0)
    zpad = np.zeros_like(out)
    zpad[:zero.size] = zero
    for w in range(stored.size * 8 // n):
        word = bits_of(stored, w * n, n)
        clean_word = bits_of(clean, w * n, n)
        bits, status = ref_decode_word(word, k, r)
        if word != clean_word:
            counts["faulty_words"] += 1
            if status == "detected":
                counts["detected"] += 1
            elif bits == clean_word[:k]:
                counts["corrected"] += 1
            else:
                counts["miscorrected"] += 1
        if status == "detected" and policy == "zero":
            bits = bits_of(zpad, w * k, k)
        for i, b in enumerate(bits):
            out[(w * k + i) // 8] |= b << ((w * k + i) % 8)
    return out[:data.size], counts


def counts_of(s: ecc.EccStats) -> dict:
    d = s.as_dict()
    d.pop("words")
    return d


# ------------------------------------------------------------------------------ exact cases

@pytest.mark.parametrize("name", list(K_R))
def test_encode_matches_reference(name):
    data = np.random.default_rng(1).integers(0, 256, 37, dtype=np.uint8)   # not a whole group
    stored = ecc.encode(name, data)
    assert np.array_equal(stored, ref_encode(name, data))
    assert stored.size == ecc.CODES[name].stored_bytes(37)
    # 37 bytes padded to one 64-byte block: 8 words of 9 bytes / 64 codewords in 104 bytes
    assert stored.size == (72 if name == "secded72" else 104)


def test_code_constants():
    c72, c13 = ecc.CODES["secded72"], ecc.CODES["secded13"]
    assert (c72.n, c72.block_words, c72.block_bytes, c72.overhead) == (72, 8, 72, 72 / 64)
    assert (c13.n, c13.block_words, c13.block_bytes, c13.overhead) == (13, 64, 104, 13 / 8)
    assert list(c13.data_positions) == [3, 5, 6, 7, 9, 10, 11, 12]
    assert c72.data_positions[-1] == 71


def one_word_per_pattern(name: str, patterns: list[tuple[int, ...]], seed: int = 0):
    """A memory of len(patterns) random words, word w hit by flips at its pattern's positions."""
    k, r = K_R[name]
    n = k + r
    data = np.random.default_rng(seed).integers(0, 256, len(patterns) * k // 8, dtype=np.uint8)
    mem = ecc.EccMemory(data, name)
    address = np.array([w * n + p for w, pat in enumerate(patterns) for p in pat], dtype=np.uint64)
    return mem, data, Faults(address, np.zeros(address.size, dtype=np.uint8))


@pytest.mark.parametrize("name", list(K_R))
def test_every_single_error_is_corrected(name):
    k, r = K_R[name]
    patterns = [(p,) for p in range(k + r)]
    mem, data, faults = one_word_per_pattern(name, patterns)
    out, s = mem.read(faults)
    assert np.array_equal(out, data)
    assert counts_of(s) == {"faulty_words": k + r, "corrected": k + r, "detected": 0,
                            "miscorrected": 0}


@pytest.mark.parametrize("name", list(K_R))
@pytest.mark.parametrize("policy", ecc.POLICIES)
def test_every_double_error_is_detected(name, policy):
    k, r = K_R[name]
    n = k + r
    patterns = [(a, b) for a in range(n) for b in range(a + 1, n)]     # 2556 / 78 pairs
    mem, data, faults = one_word_per_pattern(name, patterns)
    out, s = mem.read(faults, policy=policy)
    assert counts_of(s) == {"faulty_words": len(patterns), "corrected": 0,
                            "detected": len(patterns), "miscorrected": 0}
    raw = data.copy()                                      # the data bits as read, uncorrected
    for w, pat in enumerate(patterns):
        for p in pat:
            if p < k:
                raw[(w * k + p) // 8] ^= 1 << (p % 8)
    expect = raw if policy == "keep" else np.zeros_like(data)
    assert np.array_equal(out, expect)
    ref, counts = ref_read(name, ecc.encode(name, data) ^ _xor_of(faults, mem.stored.size),
                           mem.stored, data, mem.zero[:data.size], policy)
    assert np.array_equal(out, ref) and counts == counts_of(s)


def _xor_of(faults: Faults, nbytes: int) -> np.ndarray:
    x = np.zeros(nbytes, dtype=np.uint8)
    for a in faults.address.tolist():
        x[a // 8] ^= 1 << (a % 8)
    return x


def test_triple_errors_miscorrect_like_a_real_decoder():
    """Three flips in one (72,64) word: odd parity, syndrome = XOR of the three positions."""
    # data bits 0, 1, 2 sit at positions 3, 5, 6: 3 ^ 5 ^ 6 = 0 -> the decoder blames the
    # overall parity bit and leaves all three errors in place (a silent miscorrection)
    mem, data, faults = one_word_per_pattern("secded72", [(0, 1, 2)])
    out, s = mem.read(faults)
    assert counts_of(s) == {"faulty_words": 1, "corrected": 0, "detected": 0, "miscorrected": 1}
    assert int(out[0] ^ data[0]) == 0b111
    # data bits 0, 1 and Hamming bit p8 (stored bit 64 + 3): 3 ^ 5 ^ 8 = 14, the position of
    # data bit 9 (positions 3, 5, 6, 7, 9, 10, 11, 12, 13, 14): a fourth bit gets flipped
    mem, data, faults = one_word_per_pattern("secded72", [(0, 1, 67)])
    out, s = mem.read(faults)
    assert s.miscorrected == 1
    assert int(out[0] ^ data[0]) == 0b11 and int(out[1] ^ data[1]) == 0b10
    # data bits 0, 1, 63 (positions 3, 5, 71): 3 ^ 5 ^ 71 = 65, the position of data bit 57
    assert ecc.CODES["secded72"].syndrome_target[3 ^ 5 ^ 71] == 57


def test_secded13_invalid_syndrome_is_detected():
    """(13,8) is shortened: syndromes 13-15 name no position; odd errors there are detected."""
    target = ecc.CODES["secded13"].syndrome_target
    assert list(target[13:16]) == [-2, -2, -2]
    # data bits 4, 6, 7 (positions 9, 11, 12): 9 ^ 11 ^ 12 = 14 -> no such position: detected
    mem, data, faults = one_word_per_pattern("secded13", [(4, 6, 7)] + [()] * 7)
    out, s = mem.read(faults, policy="zero")
    assert counts_of(s) == {"faulty_words": 1, "corrected": 0, "detected": 1, "miscorrected": 0}
    assert out[0] == 0 and np.array_equal(out[1:], data[1:])


@settings(max_examples=60, deadline=None)
@given(name=st.sampled_from(list(K_R)), policy=st.sampled_from(ecc.POLICIES),
       words=st.integers(1, 24), seed=st.integers(0, 2 ** 32 - 1),
       per_word=st.lists(st.integers(0, 6), min_size=24, max_size=24))
def test_random_multi_error_words_match_reference(name, policy, words, seed, per_word):
    """Random data, 0-6 faults of any kind per word: module == bit-by-bit reference."""
    k, r = K_R[name]
    n = k + r
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, words * k // 8 if name == "secded72" else words, dtype=np.uint8)
    zero = rng.integers(0, 256, data.size, dtype=np.uint8)
    mem = ecc.EccMemory(data, name, zero)
    nwords = mem.stored.size * 8 // n
    address = np.concatenate([w * n + rng.choice(n, per_word[w % 24], replace=False)
                              for w in range(nwords)]).astype(np.uint64)
    kind = rng.integers(0, 3, address.size).astype(np.uint8)
    out, s = mem.read(Faults(address, kind), policy=policy)
    faulty = naive_apply(mem.stored, dict(zip(address.tolist(), kind.tolist())), mem.stored.size)
    ref, counts = ref_read(name, faulty, mem.stored, data, zero, policy)
    assert np.array_equal(out, ref)
    assert counts == counts_of(s)


# ------------------------------------------------------------------------------ chips, threads

def test_chip_smaller_than_stored_image_tiles():
    """The stored image (data + check bits) is what the chip holds: placed and tiled like any image."""
    chip = Chip.random(Geometry(16, 64), BerCurve.builtin("finfet14"), 0.78, seed=3,
                       kinds={"flip": 0.5, "stuck0": 0.25, "stuck1": 0.25})    # 128 bytes
    v = 0.8
    data = np.random.default_rng(2).integers(0, 256, 300, dtype=np.uint8)
    for name in K_R:
        mem = ecc.EccMemory(data, name)
        assert mem.stored.size > 2 * chip.geometry.capacity_bytes
        out, s = mem.read(chip, v, offset=5, policy="keep")
        f = chip.faults(v)
        faulty = naive_apply(mem.stored, dict(zip(f.address.tolist(), f.kind.tolist())),
                             chip.geometry.capacity_bytes, offset_bytes=5)
        ref, counts = ref_read(name, faulty, mem.stored, data, mem.zero[:300], "keep")
        assert np.array_equal(out, ref) and counts == counts_of(s)
        assert s.faulty_words > 0


def test_results_do_not_depend_on_threads():
    """A stored image above the parallel threshold: 1, 2 (and 3 where numba's pool has them;
    tests/test_determinism.py runs 3 in its own process) threads give the same bytes."""
    from conftest import numba_thread_counts
    from sramsim.analysis.executors import pinned_threads
    data = np.random.default_rng(4).integers(0, 256, 1 << 20, dtype=np.uint8)
    mem = ecc.EccMemory(data, "secded72")
    faults = RandomBitErrors(0.003, seed=9).draw(mem.n_bits)
    results = []
    for t in numba_thread_counts():
        with pinned_threads(t):
            results.append(mem.read(faults, policy="zero"))
    for out, stats in results[1:]:
        assert np.array_equal(out, results[0][0]) and stats == results[0][1]


# ------------------------------------------------------------------------------ statistics

@pytest.mark.parametrize("name", list(K_R))
def test_uncorrectable_fraction_matches_binomial(name):
    """BER 1%, flips: a word is decoded wrong or flagged exactly when it holds >= 2 errors.

    Per word that is checked exactly (counts from the fault addresses); the fraction against
    the binomial law with a 99.9% interval. (72,64): P(>= 2 of 72) = 16.2% (13.5% is the
    figure for 64 bits); (13,8): P(>= 2 of 13) = 0.75%.
    """
    k, r = K_R[name]
    n, p = k + r, 0.01
    words = 40_000
    data = np.random.default_rng(5).integers(0, 256, words * k // 8, dtype=np.uint8)
    mem = ecc.EccMemory(data, name)
    faults = RandomBitErrors(p, seed=11).draw(mem.n_bits)
    out, s = mem.read(faults)
    per_word = np.bincount((faults.address // n).astype(np.int64), minlength=words)
    assert s.faulty_words == int(np.count_nonzero(per_word))
    assert s.corrected == int(np.count_nonzero(per_word == 1))
    bad = s.detected + s.miscorrected
    assert bad == int(np.count_nonzero(per_word >= 2))
    expect = 1 - stats.binom.cdf(1, n, p)
    lo, hi = stats.binom.interval(0.999, words, expect)
    assert lo <= bad <= hi, (bad / words, expect)
    if name == "secded72":
        assert abs(expect - 0.1623) < 1e-3 and abs((1 - stats.binom.cdf(1, 64, p)) - 0.135) < 1e-3


# ------------------------------------------------------------------------------ the model

def test_quantized_model_reads_through_ecc():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(20, 13), torch.nn.Linear(13, 3))
    for scheme in ("symmetric", "asymmetric"):
        qm = QuantizedModel(model, bits=4, scheme=scheme)
        clean = qm.faulty_image(RandomBitErrors(0.0), layout=MemoryLayout(ecc="secded72"))
        assert np.array_equal(clean, qm.image)
        mem = qm.ecc_memory("secded72")
        assert mem is qm.ecc_memory("secded72") and mem.stored.size == -(-qm.image.size // 64) * 72
        src = RandomBitErrors(0.05, seed=3)
        img = qm.faulty_image(src, layout=MemoryLayout(ecc="secded72", ecc_policy="zero"))
        again, s = mem.read(RandomBitErrors(0.05, seed=3), policy="zero")
        assert np.array_equal(img, again) and s.detected > 0
        # a word zeroed by the policy decodes to the weight nearest 0.0 in each tensor
        zero_w = qm.dequantize(ecc.zero_image(qm))
        for name, w in zero_w.items():
            seg = next(x for x in qm.segments if x.name == name)
            assert float(w.abs().max()) <= seg.quant.delta / 2 + 1e-7
        weights = qm.perturbed(RandomBitErrors(0.05, seed=3), layout=MemoryLayout(ecc="secded13"))
        assert set(weights) == set(qm.names)


def test_bad_ecc_arguments():
    with pytest.raises(InputError, match="ecc 'secded64'"):
        MemoryLayout(ecc="secded64")
    with pytest.raises(InputError, match="policy 'drop'"):
        MemoryLayout(ecc="secded72", ecc_policy="drop")
    with pytest.raises(InputError, match="ecc policy needs ecc"):
        MemoryLayout(ecc_policy="zero")
    with pytest.raises(InputError, match="error-aware DRAM mapping is not modelled"):
        MemoryLayout(ecc="secded72", mapping="error-aware")


# ------------------------------------------------------------------------------ the whole chain

@pytest.mark.usefixtures("one_torch_thread")
def test_sweep_with_ecc_points_energy_and_tiling(tmp_path):
    """A 64-byte chip under a ~1 KB stored image (tiled): each point equals the model read
    through qm.ecc_memory by hand; E/read = e(V) * 72/64 + decoder; a resume with another code
    is refused."""
    from sramsim.analysis import energy as E
    from sramsim.analysis import sweep as S
    from sramsim.nn.evaluation import evaluate
    model, ds = small_world()
    chips = S.random_chips(1, "finfet14", 8, 64, seed=2, v_floor=0.78)
    summary = S.run_sweep(model, ds, chips, [0.84, 0.8], tmp_path / "s",
                          S.SweepSettings(offsets=2, layout=MemoryLayout(ecc="secded72",
                                                                         ecc_policy="zero")),
                          Execution(progress=False))
    qm = QuantizedModel(model)
    chip = chips[0].build()
    assert qm.ecc_memory("secded72").stored.size > 10 * chip.geometry.capacity_bytes
    import json
    lines = (tmp_path / "s" / "points.jsonl").read_text().splitlines()
    points = [p for p in map(json.loads, lines) if not p.get("clean")]
    assert len(points) == 4
    for p in points:
        image, s = qm.ecc_memory("secded72").read(chip, p["voltage"], p["offset"], "zero")
        assert p["ecc"] == s.as_dict() and s.faulty_words > 0
        assert p["accuracy"] == evaluate(model, ds, qm.dequantize(image))["accuracy"]
    row = summary["points"][0]
    assert row["energy_per_read"] == pytest.approx(E.energy_per_read(0.84) * 72 / 64 + 0.05)
    assert summary["ecc"] == {"code": "secded72", "policy": "zero", "read_overhead": 1.125,
                              "decoder_energy": 0.05}
    with pytest.raises(InputError, match="different configuration"):
        S.run_sweep(model, ds, chips, [0.84, 0.8], tmp_path / "s",
                    S.SweepSettings(offsets=2, layout=MemoryLayout(ecc="secded13")),
                    Execution(progress=False))


@pytest.mark.usefixtures("one_torch_thread")
def test_vuln_and_fusion_eval_read_through_ecc():
    """Both draw their maps over the stored image and decode them: the 'all' row and PA equal
    the decoded model; random errors at BER 0.5% leave some words wrong, not all."""
    from fusion.evaluation import FaultSpec, evaluate
    from sramsim.analysis import vulnerability as V
    from sramsim.inject.draws import fixed_draws
    from sramsim.nn.evaluation import accuracy
    model, ds = small_world()
    qm = QuantizedModel(model)
    mem = qm.ecc_memory("secded13")
    report = V.analyze(qm, ds, ber=0.005, models=3, by="layer", seed=4,
                       layout=MemoryLayout(ecc="secded13"))
    expect = []
    for draw in fixed_draws(mem.n_bits, 3, ber=0.005, seed=4):
        image, s = mem.read(draw)
        expect.append((accuracy(model, ds, qm.dequantize(image)), s))
    assert report["all"]["accuracy"] == [a for a, _ in expect]
    assert report["ecc"]["detected"] == pytest.approx(np.mean([s.detected for _, s in expect]))
    assert report["ecc"]["code"] == "secded13" and report["ecc"]["corrected"] > 0
    layout = MemoryLayout(ecc="secded72", ecc_policy="zero")
    r = evaluate(qm, ds, FaultSpec(ber=0.02), n_models=2, layout=layout)
    draws = FaultSpec(ber=0.02).eval_draws(qm.ecc_memory("secded72").n_bits, 2)
    assert r["pa"] == [accuracy(model, ds, qm.perturbed(d, layout=layout))
                       for d in draws]
    assert r["ecc"]["policy"] == "zero" and r["ecc"]["detected"] > 0
    plain = evaluate(qm, ds, FaultSpec(ber=0.02), n_models=2)
    assert r["energy_saving"] < plain["energy_saving"] and plain["ecc"] is None


def test_energy_with_ecc():
    from sramsim.analysis import energy as E
    e = E.energy_per_read(0.833)
    assert E.ecc_energy_per_read(0.833, ecc="secded72") == pytest.approx(e * 1.125 + 0.05)
    assert E.ecc_energy_per_read(0.833, ecc="secded13", decoder=0) == pytest.approx(e * 13 / 8)
    assert E.addon_saving(100, 10, 0.833, ecc="secded72", decoder=0.0) == pytest.approx(
        1 - e * 1.125 - 0.1)
    assert E.saving(1.0, ecc="secded72") == pytest.approx(-0.175)   # ECC at nominal costs energy
    with pytest.raises(InputError, match="ecc decoder energy needs an ecc code"):
        E.ecc_energy_per_read(0.9, decoder=0.1)
    with pytest.raises(InputError, match="ecc decoder energy must be a finite number"):
        E.ecc_energy_per_read(0.9, ecc="secded72", decoder=float("nan"))


def test_energy_cli_with_ecc(capsys):
    import json
    from sramsim.commands.main import main
    assert main(["energy", "--accesses", "1000", "--addon-accesses", "100", "--voltage", "0.833",
                 "--ecc", "secded72", "--ecc-decoder-energy", "0.02", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    e = r["energy_per_read"]
    assert (r["ecc"], r["ecc_read_overhead"], r["ecc_decoder_energy"]) == ("secded72", 1.125, 0.02)
    assert r["energy_per_data_read"] == pytest.approx(e * 1.125 + 0.02)
    assert r["saving"] == pytest.approx(1 - (e * 1.125 + 0.02) - 0.1)


@pytest.mark.usefixtures("one_torch_thread")
def test_cli_sweep_vuln_and_fusion_eval_with_ecc(tmp_path, capsys):
    """The three commands end to end with --ecc: exit 0, one JSON object carrying the code."""
    import json
    from conftest import write_idx
    from fusion.cli import main as fusion_main
    from sramsim.commands.main import main
    from sramsim.nn.models import build, save_checkpoint
    rng = np.random.default_rng(0)
    data = tmp_path / "data"
    data.mkdir()
    for prefix, n in (("train", 8), ("t10k", 16)):
        write_idx(data / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 255, (n, 16, 16)))
        write_idx(data / f"{prefix}-labels-idx1-ubyte.gz", rng.integers(0, 2, n))
    save_checkpoint(tmp_path / "m.pt", build("cnn", 1, 2).eval(),
                    {"arch": "cnn", "in_channels": 1, "num_classes": 2, "norm": "batch", "bits": 8,
                     "scheme": "asymmetric", "clip": None, "dataset": None})
    base = ["--data", str(data), "--json"]
    assert main(["sweep", "--model", str(tmp_path / "m.pt"), "--chips", "1", "--rows", "64",
                 "--cols", "512", "--voltages", "0.85", "--out", str(tmp_path / "s"),
                 "--no-progress", "--ecc", "secded13", "--ecc-policy", "zero", *base]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["ecc"]["code"] == "secded13" and s["points"][0]["ecc"]["faulty_words"] > 0
    assert main(["vuln", "--model", str(tmp_path / "m.pt"), "--ber", "0.01", "--models", "2",
                 "--by", "bit", "--no-progress", "--ecc", "secded72", *base]) == 0
    v = json.loads(capsys.readouterr().out)
    assert v["ecc"]["code"] == "secded72" and v["ecc"]["corrected"] > 0
    assert fusion_main(["eval", "--base", str(tmp_path / "m.pt"), "--ber", "0.01", "--models", "2",
                        "--ecc", "secded72", *base]) == 0
    f = json.loads(capsys.readouterr().out)
    from sramsim.analysis.energy import energy_per_read
    assert f["ecc"]["policy"] == "keep"
    assert f["energy_saving_base"] == pytest.approx(
        1 - (energy_per_read(f["faults"]["voltage"]) * 72 / 64 + 0.05))
