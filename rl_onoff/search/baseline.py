"""What the tree search is compared with: greedy decoding and plain sampling (00's generator).

Plain sampling draws a pool per question until the pool's *distinct* response tokens (the
nodes of the trie its samples form, as the tree counts its own) reach that question's
largest tree budget, or `max_samples`. The same pool gives both sampling controls
(rl_onoff.search.metrics): every token counted (plain best-of-n / maj@n), and shared
prefixes counted once (prefix-shared sampling, the fair control for a method that shares
prefixes). Counting distinct tokens never exceeds counting all, so the pool covers both.
"""

from __future__ import annotations

import math
import time

import torch

from rl_onoff.decoding import SamplingParams
from rl_onoff.generation import Generated, generate


def generate_all(model, tokenizer, prompts: list[list[int]], params: SamplingParams,
                 max_new_tokens: int, eos_ids: list[int], batch_size: int,
                 generator: torch.Generator | None = None) -> list[Generated]:
    """One response per prompt, `batch_size` at a time."""
    out = []
    for i in range(0, len(prompts), batch_size):
        out += generate(model, tokenizer, prompts[i:i + batch_size], params, max_new_tokens,
                        eos_ids=eos_ids, generator=generator)
    return out


class Trie:
    """Distinct response prefixes of a set of responses: how many tokens a shared-prefix
    sampler would have generated."""

    def __init__(self):
        self.root: dict = {}
        self.size = 0

    def add(self, token_ids: list[int]) -> int:
        """Insert a response; return how many new prefixes (tokens) it added."""
        node, new = self.root, 0
        for token in token_ids:
            if token not in node:
                node[token] = {}
                new += 1
            node = node[token]
        self.size += new
        return new


def distinct_new_tokens(token_lists: list[list[int]]) -> list[int]:
    """Per response (in order), the tokens it adds to the trie of those before it."""
    trie = Trie()
    return [trie.add(ids) for ids in token_lists]


def sample_pools(model, tokenizer, prompts: list[list[int]], budgets: list[int],
                 params: SamplingParams, max_new_tokens: int, eos_ids: list[int],
                 batch_size: int, length_guess: list[float], generator: torch.Generator,
                 max_samples: int, progress=None) -> tuple[list[list[Generated]], float]:
    """Per prompt, samples until their distinct tokens reach its budget (at most `max_samples`);
    (pools, seconds).

    Each round draws what is still missing divided by the mean new tokens per sample so far
    (before the first sample: `length_guess`, e.g. the greedy length)."""
    pools: list[list[Generated]] = [[] for _ in prompts]
    tries = [Trie() for _ in prompts]
    start = time.time()
    while True:
        want = {}
        for q in range(len(prompts)):
            used, have = tries[q].size, len(pools[q])
            if used < budgets[q] and have < max_samples:
                per_sample = max(1.0, used / have if have else length_guess[q])
                want[q] = min(math.ceil((budgets[q] - used) / per_sample), max_samples - have)
        if not want:
            return pools, time.time() - start
        order = [q for q, k in want.items() for _ in range(k)]
        generated = generate_all(model, tokenizer, [prompts[q] for q in order], params,
                                 max_new_tokens, eos_ids, batch_size, generator)
        for q, g in zip(order, generated):
            pools[q].append(g)
            tries[q].add(g.token_ids)
        if progress is not None:
            progress.update(len(order))
