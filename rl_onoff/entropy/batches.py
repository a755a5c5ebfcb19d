"""The E and U batches: prompts drawn from the dataset, G responses each from the policy.

Each batch is drawn with its own seed (prompts without replacement within the
batch, responses with the shared generation loop), so E and U are independent
unless the configuration asks to share them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from rl_onoff.decoding import SamplingParams
from rl_onoff.entropy.policy import Group
from rl_onoff.generation import generate


@dataclass
class PromptSet:
    """The dataset's prompts, tokenised once per session, and what scores a response: a reward
    from the registry (rl_onoff.rewards), fed by the math-verify scorer's verdicts."""
    prompt_ids: list[list[int]]
    references: list[str]
    questions: list[str]
    reward: str = "math_verify"
    format: str = "boxed"
    ignore_think: bool = True
    reward_timeout: float = 5.0
    max_new_tokens: int = 96

    def rewards(self, texts: list[str], rows: list[int], lengths: list[int],
                finish_reasons: list[str]) -> list[float]:
        from rl_onoff.rewards import Response, get
        from rl_onoff.tasks import score_many

        scores = score_many(texts, [self.references[q] for q in rows], self.format,
                            self.ignore_think, self.reward_timeout)
        responses = [Response(text=t, reference=self.references[q], num_tokens=n, finish_reason=f,
                              max_new_tokens=self.max_new_tokens, status=sc.status,
                              correct=sc.reward >= 1.0, question=self.questions[q])
                     for t, q, n, f, sc in zip(texts, rows, lengths, finish_reasons, scores)]
        return [float(r) for r in get(self.reward)(responses)]


@dataclass(frozen=True)
class SamplingSpec:
    num_samples: int = 8          # G
    temperature: float = 1.0
    max_new_tokens: int = 96
    batch_size: int = 64          # sequences generated together


def batch_seed(seed: int, role: str, index: int) -> int:
    """A distinct, reproducible seed for batch `index` of role E, U or H (held-out E')."""
    return int(np.random.SeedSequence([seed, ord(role[0]), index]).generate_state(1)[0])


def sample_batch(model, tokenizer, prompts: PromptSet, size: int, spec: SamplingSpec,
                 seed: int, eos_ids: list[int], score: bool) -> list[Group]:
    """`size` prompts, G responses each; rewards when `score` (the U batch needs them)."""
    rng = np.random.default_rng(seed)
    if size > len(prompts.prompt_ids):
        raise ValueError(f"a batch of {size} prompts needs at least that many dataset records; "
                         f"the dataset has {len(prompts.prompt_ids)}")
    questions = sorted(rng.choice(len(prompts.prompt_ids), size=size, replace=False).tolist())
    rows = [q for q in questions for _ in range(spec.num_samples)]
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed % 2**63)
    params = SamplingParams(temperature=spec.temperature)
    responses, reasons = [], []
    for start in range(0, len(rows), spec.batch_size):
        chunk = rows[start:start + spec.batch_size]
        out = generate(model, tokenizer, [prompts.prompt_ids[q] for q in chunk], params,
                       spec.max_new_tokens, eos_ids=eos_ids, generator=generator)
        responses += [g.token_ids for g in out]
        reasons += [g.finish_reason for g in out]
    rewards = [0.0] * len(rows)
    if score:
        texts = [tokenizer.decode(r, skip_special_tokens=True) for r in responses]
        rewards = prompts.rewards(texts, rows, [len(r) for r in responses], reasons)
    g = spec.num_samples
    return [Group(prompt_ids=prompts.prompt_ids[q], responses=responses[i * g:(i + 1) * g],
                  rewards=rewards[i * g:(i + 1) * g], question=q)
            for i, q in enumerate(questions)]
