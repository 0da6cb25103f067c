"""Cost of one EOPM step (N perturbed models) vs N+1 plain forward/backward steps of G + M.

An EOPM step runs G once, draws N fault maps, builds N faulty weight sets from the memory image
(numba kernels + one batched dequantization) and runs the N+1 models (clean + N faulty) stacked
in one vmapped call. The yardstick is (N+1) x a plain step (G forward/backward + M forward/backward
+ Adam step); the target is EOPM <= 1.15 x that. Both use the same G (ConvS) and base model
(the default small CNN), batch 128, 28x28 inputs.

Writes benchmarks/results/eopm.json.  Usage: python benchmarks/bench_eopm.py [--repeat R]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import median_time, write_result  # noqa: E402

from fusion.eopm import EopmConfig, EopmTrainer  # noqa: E402
from sramsim.inject.draws import RandomSampler  # noqa: E402
from fusion.generators import build as build_generator  # noqa: E402
from sramsim import QuantizedModel  # noqa: E402
from sramsim.nn.models import build  # noqa: E402

TARGET = 1.15


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--n", type=int, default=10)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--generator", default="ConvS")
    ap.add_argument("--threads", type=int, default=None, help="torch and numba threads")
    args = ap.parse_args()
    if args.threads:
        import numba
        torch.set_num_threads(args.threads)
        numba.set_num_threads(args.threads)
    torch.manual_seed(0)
    base = build("cnn").eval()
    qm = QuantizedModel(base)
    x = torch.rand(args.batch, 1, 28, 28) * 2 - 1
    y = torch.randint(0, 10, (args.batch,))
    n = args.n

    # Plain step: G + M (clean quantized weights), forward, backward, Adam.
    g = build_generator(args.generator, 1)
    opt = torch.optim.Adam(g.parameters(), 1e-3, betas=(0.5, 0.999))
    clean = qm.clean_weights()
    for p in base.parameters():
        p.requires_grad_(False)

    def plain():
        loss = F.cross_entropy(torch.func.functional_call(base, clean, (g(x),)), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    t_plain = median_time(plain, args.repeat)
    results = {}
    for batched in ("vmap", "loop"):
        trainer = EopmTrainer(qm, RandomSampler(0.01, seed=1), 1,
                              EopmConfig(generator=args.generator, n_perturbed=n, batched=batched,
                                         identity_init=False, batch_size=args.batch))
        t = median_time(lambda: trainer.step(x, y), args.repeat)
        t_sample = median_time(lambda: trainer.weights.sample(trainer.sampler, n, with_clean=True),
                               args.repeat)
        results[batched] = {"step_s": t, "ratio_vs_plain": t / ((n + 1) * t_plain),
                            "fault_weights_s": t_sample}
        print(f"EOPM step ({batched}): {t * 1e3:.0f} ms = {results[batched]['ratio_vs_plain']:.3f} x "
              f"(N+1) plain steps; of which {t_sample * 1e3:.1f} ms build {n} faulty weight sets")
    best = min(results, key=lambda k: results[k]["step_s"])
    print(f"plain step (G + M fwd/bwd + Adam): {t_plain * 1e3:.0f} ms; (N+1) x = "
          f"{(n + 1) * t_plain * 1e3:.0f} ms")
    write_result("eopm.json", {
        "benchmark": "EOPM step vs (N+1) plain G+M steps",
        "generator": args.generator, "base": "cnn (sramsim.nn.models, 86,944 8-bit weights)",
        "batch": args.batch, "n_perturbed": n, "ber": 0.01, "repeat": args.repeat,
        "plain_step_s": t_plain, "reference_s": (n + 1) * t_plain,
        "eopm": results, "best": best, "ratio": results[best]["ratio_vs_plain"],
        "target_ratio": TARGET, "meets_target": results[best]["ratio_vs_plain"] <= TARGET,
    })


if __name__ == "__main__":
    main()
