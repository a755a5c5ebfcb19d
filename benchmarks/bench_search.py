"""03-tree-search's cost: forward tokens per new tree token, and time against plain sampling.

    python benchmarks/bench_search.py                        # tiny-arith, arith levels 4-5, CPU
    OMP_NUM_THREADS=1 python benchmarks/bench_search.py --questions 8 --rollouts 16
    python benchmarks/bench_search.py --model PATH --device cuda

The tree search runs `rollouts` iterations on `questions` trees together (the
stage's code path, real rewards). Then plain sampling (rl_onoff.generation,
batched) draws samples per question until it has generated as many tokens as
that question's tree: the same generated-token budget. Prints

- forward tokens per new tree node (prompt included), and the saving of KV reuse against
  re-running each rollout's prefix (what a per-rollout `generate` does; computed, not run);
- occupancy: real tokens per model call and the share of padded slots, tree vs sampling;
- the share of rollouts that add no token (they end on a response already in the tree);
- seconds per new tree token vs per plain-sample token (goal: ratio <= 1.2).
"""

from __future__ import annotations

import argparse
import random
import time

import torch


def main() -> None:
    from rl_onoff.config import TaskConfig
    from rl_onoff.data import load_dataset
    from rl_onoff.decoding import SamplingParams
    from rl_onoff.generation import eos_token_ids
    from rl_onoff.models import load_model
    from rl_onoff.search.baseline import sample_pools
    from rl_onoff.search.dts import Settings, iterate
    from rl_onoff.search.kv import KVPolicy
    from rl_onoff.search.rewards import Scorer
    from rl_onoff.search.tree import tokens
    from rl_onoff.tasks import build_prompt, encode_prompt

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny-arith")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--questions", type=int, default=20)
    parser.add_argument("--levels", type=int, nargs="+", default=[4, 5])
    parser.add_argument("--rollouts", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--lam", type=float, default=10.0)
    parser.add_argument("--reward", default="math_verify")
    parser.add_argument("--sample-batch", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    model, tokenizer = load_model(args.model, args.device, args.dtype)
    device = next(model.parameters()).device
    records = load_dataset("arith", "test", args.questions, levels=args.levels)
    prompts = [encode_prompt(build_prompt(r["question"], tokenizer), tokenizer, "auto")
               for r in records]
    params, eos_ids, task = SamplingParams(temperature=1.0), eos_token_ids(model, tokenizer), TaskConfig()
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    policy = KVPolicy(model, params, eos_ids, args.max_new_tokens,
                      torch.Generator(device=device).manual_seed(args.seed),
                      tokenizer.pad_token_id)
    rng, scoring = random.Random(args.seed), [0.0]
    references = {}
    scorer = Scorer(tokenizer, task, args.reward, {}, args.max_new_tokens)

    def score(pairs):
        start = time.perf_counter()
        _, scored = scorer.score([tokens(leaf) for _, leaf in pairs],
                                 [leaf.finish for _, leaf in pairs],
                                 [references[id(tree)] for tree, _ in pairs])
        scoring[0] += time.perf_counter() - start
        return [s.reward for s in scored]

    sync()
    start = time.perf_counter()
    trees = policy.new_trees(prompts)
    references.update({id(t): r["answer"] for t, r in zip(trees, records)})
    recompute = 0                      # tokens a search re-running each rollout's prefix forwards
    empty = 0                          # rollouts that added no token
    for k in range(1, args.rollouts + 1):
        sizes = [t.size for t in trees]
        leaves = iterate(trees, policy, score, Settings(lam=args.lam), rng, k)
        for tree, leaf, size in zip(trees, leaves, sizes):
            if tree.size > size:       # new nodes: the prompt and the path re-run, EOS excluded
                recompute += tree.prompt_len + leaf.depth - (leaf.finish == "eos")
            else:
                empty += 1
    sync()
    tree_seconds = time.perf_counter() - start - scoring[0]

    nodes = sum(t.size for t in trees)
    no_cache = sum(t.prompt_len + n.depth for t in trees for n in all_nodes(t.root)
                   if n.parent is not None and not n.terminal)  # every token re-runs its prefix
    forward = sum(t.forward_tokens for t in trees)
    prompt_tokens = sum(t.prompt_len for t in trees)
    budgets = [t.size + t.refills for t in trees]
    rollouts = args.rollouts * len(trees)

    sync()
    pools, sample_seconds = sample_pools(model, tokenizer, prompts, budgets, params,
                                         args.max_new_tokens, eos_ids, args.sample_batch,
                                         [args.max_new_tokens / 2] * len(prompts),
                                         torch.Generator(device=device).manual_seed(args.seed),
                                         16 * args.rollouts)
    samples = sum(len(p) for p in pools)
    sampled = sum(len(g.token_ids) for p in pools for g in p)

    print(f"model {args.model} on {device} ({next(model.parameters()).dtype}), arith levels "
          f"{args.levels}: {len(trees)} questions x {args.rollouts} rollouts, "
          f"max_new_tokens {args.max_new_tokens}, lambda {args.lam}")
    print(f"tree: {nodes} new nodes, {forward} forward tokens ({prompt_tokens} of them prompt, "
          f"{sum(t.refills for t in trees)} refills), {policy.forward_slots} forward slots with "
          "padding")
    print(f"forward tokens per new tree node:        {forward / nodes:6.3f}")
    print(f"  without the prompt:                    {(forward - prompt_tokens) / nodes:6.3f}")
    print(f"  re-running each rollout's prefix:      {recompute / nodes:6.3f}  (computed, not run): "
          f"reuse saves {recompute / forward:.2f}x")
    print(f"  no KV cache at all:                    {no_cache / nodes:6.1f}  (computed, not run)")
    print(f"occupancy: tree {forward / policy.forward_slots:.3f} of forward slots are real tokens "
          f"(the rest is padding of finished or shorter rows); rollouts adding no token: "
          f"{empty / rollouts:.3f}")
    print(f"tree search:    {tree_seconds:7.2f} s  {1000 * tree_seconds / rollouts:8.1f} ms/rollout  "
          f"{1000 * tree_seconds / sum(budgets):6.2f} ms/token  (scoring {scoring[0]:.2f} s not "
          "counted)")
    print(f"plain sampling: {sample_seconds:7.2f} s  {1000 * sample_seconds / samples:8.1f} "
          f"ms/sample   {1000 * sample_seconds / sampled:6.2f} ms/token  ({samples} samples, "
          f"{sampled} tokens vs the tree's {sum(budgets)})")
    print(f"time ratio at equal tokens (tree / sampling): "
          f"{(tree_seconds / sum(budgets)) / (sample_seconds / sampled):6.2f}")


def all_nodes(root):
    stack = [root]
    while stack:
        node = stack.pop()
        yield node
        stack.extend(node.children.values())


if __name__ == "__main__":
    main()
