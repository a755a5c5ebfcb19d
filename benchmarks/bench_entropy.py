"""05-entropy: does the batch-scaling test catch a biased estimator? (tabular bandit, ~10 s-2 min)
`memory`: peak memory of one E group's entropy terms and backward, chunked vs whole-vocabulary.

Runs the real estimator code (prepare_update + entropy_gradients, SGD) on a
tabular softmax bandit, with E and U independent and with E = U (the biased
variant `share_batches: true` selects), over several batch sizes, and prints
the mean of delta-H1 per B, the exact first-order change, and the mean-fit
verdict of analysis.batch_scaling. The shared variant's mean moves like 1/B;
the independent one stays at the exact value. (Here U is redrawn with E, B_U =
B, so the spread is not expected to fall like B^-1/2: the product of two noisy
means has a 1/B^2 term. The pipeline's batch-scaling holds U fixed.)

    python benchmarks/bench_entropy.py [--runs 200]
    python benchmarks/bench_entropy.py memory [--layers 2 --samples 8 --tokens 256]

The memory benchmark builds a randomly initialised model of Qwen2-0.5B's shape (vocabulary
151,936, hidden 896; fewer layers by default to fit a CPU), runs `token_terms` on G responses
and its backward in a fresh process per variant, and prints each peak RSS above the process's
RSS once the model is built, and their ratio.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time

import torch

from rl_onoff.entropy import analysis
from rl_onoff.entropy.tabular import TabularPolicy, bandit_first_order_runs, exact_first_order

LOGITS = [1.0, 0.5, 0.0, -1.0, -2.0]   # a bandit: one step from state 0
REWARD = [0.0, 0.0, 0.0, 1.0, 1.0]     # the rarer actions are right
G, SIZES = 2, (2, 4, 8)


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def memory_child(layers: int, samples: int, tokens: int, chunk: int) -> None:
    """One variant in this process: print the peak RSS above the RSS after building the model."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from rl_onoff.entropy import policy

    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=151_936, hidden_size=896, intermediate_size=4864,
                         num_hidden_layers=layers, num_attention_heads=14, num_key_value_heads=2,
                         max_position_embeddings=4096)
    model = Qwen2ForCausalLM(config)
    group = policy.Group(prompt_ids=list(range(100, 116)),
                         responses=[torch.randint(0, 151_936, (tokens,)).tolist()
                                    for _ in range(samples)])
    policy.CHUNK_TOKENS = chunk
    base = rss_mb()
    start = time.time()
    terms = policy.token_terms(model, group)
    (terms.seq_logp.sum() + terms.entropy.sum()).backward()
    print(f"{rss_mb() - base:.0f} {base:.0f} {time.time() - start:.1f}")


def memory(args) -> None:
    rows = {}
    for name, chunk in (("whole vocabulary", 10**9), (f"chunked ({policy_chunk()} positions)",
                                                      policy_chunk())):
        out = subprocess.run([sys.executable, __file__, "memory-child", str(args.layers),
                              str(args.samples), str(args.tokens), str(chunk)],
                             capture_output=True, text=True, check=True).stdout.split()
        rows[name] = [float(x) for x in out]
        print(f"{name:>26}: peak {rows[name][0]:,.0f} MB above the built model "
              f"({rows[name][1]:,.0f} MB), {rows[name][2]:.1f} s")
    (w, *_), (c, *_) = rows.values()
    print(f"Qwen2-0.5B shape, {args.layers} layers, G={args.samples} x {args.tokens} tokens, fp32: "
          f"whole / chunked peak = {w / c:.2f}x")


def policy_chunk() -> int:
    from rl_onoff.entropy.policy import CHUNK_TOKENS

    return CHUNK_TOKENS


def main() -> None:
    if sys.argv[1:2] == ["memory-child"]:
        memory_child(*(int(x) for x in sys.argv[2:6]))
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", nargs="?", choices=["batch-scaling", "memory"], default="batch-scaling")
    ap.add_argument("--runs", type=int, default=200, help="runs per batch size and variant")
    ap.add_argument("--layers", type=int, default=2, help="memory: decoder layers (Qwen2-0.5B: 24)")
    ap.add_argument("--samples", type=int, default=8, help="memory: G responses")
    ap.add_argument("--tokens", type=int, default=256, help="memory: tokens per response")
    args = ap.parse_args()
    if args.what == "memory":
        memory(args)
        return
    logits = torch.zeros(len(LOGITS), len(LOGITS), dtype=torch.float64)
    logits[0] = torch.tensor(LOGITS)
    policy = TabularPolicy(logits)
    reward = torch.tensor(REWARD, dtype=torch.float64)
    print(f"exact first-order change grad H . E[Dtheta] (SGD, lr 1): "
          f"{exact_first_order(policy, reward, G):.5f}")
    start = time.time()
    for variant in ("independent", "shared"):
        levels = bandit_first_order_runs(policy, reward, G, SIZES, args.runs, variant == "shared")
        result = analysis.batch_scaling(levels)
        means = ", ".join(f"B={row['batch_e']}: {row['mean']:+.4f} +- {row['se_mean']:.4f}"
                          for row in result["levels"])
        fit = result["mean_fit"]
        verdict = "unbiased (b = 0 not rejected)" if result["unbiased"] else "BIASED (b != 0)"
        print(f"{variant:>11}: mean delta-H1 {means}")
        print(f"{'':>11}  fit a + b/B: a = {fit['a']:+.4f} +- {fit['se_a']:.4f}, b = {fit['b']:+.4f} "
              f"+- {fit['se_b']:.4f} (p = {fit['p_b']:.2g}) -> {verdict} at alpha {result['alpha']}")
    print(f"{time.time() - start:.0f}s for {2 * len(SIZES) * args.runs} runs")


if __name__ == "__main__":
    main()
