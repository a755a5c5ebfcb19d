"""The search's reward through the reward registry (rl_onoff.rewards): r(y) = reward(y) plus the
weighted shaping terms, computed on the response text only (never the prompt).

Accuracy is always reported from math-verify's verdict alone, whatever the reward. A number
that picks a response by a reward that reads the reference answer is an *oracle* number.
"""

from __future__ import annotations

from dataclasses import dataclass

# registered rewards that never read the reference answer (user functions might)
REFERENCE_FREE = frozenset({"format", "length", "truncated", "step_check"})


def uses_reference(reward: str, shaping: dict) -> bool:
    """Whether selecting by this reward consults the reference (its numbers are oracle);
    reward models (rm:, prm:) never see it."""
    from rl_onoff.rewards.reward_model import is_reward_model

    return any(name not in REFERENCE_FREE and not is_reward_model(name)
               for name in [reward, *shaping])


@dataclass(frozen=True)
class Scored:
    """A response's reward and what the math-verify scorer made of it."""
    reward: float
    correct: bool
    extracted: str | None
    status: str


class Scorer:
    """Rewards of responses given as token ids, with their decoded text."""

    def __init__(self, tokenizer, task, reward: str, shaping: dict, max_new_tokens: int):
        self.tokenizer, self.task = tokenizer, task
        self.reward, self.shaping, self.max_new_tokens = reward, shaping, max_new_tokens

    def score(self, token_lists: list[list[int]], finishes: list[str], references: list[str],
              questions: list[str] | None = None) -> tuple[list[str], list[Scored]]:
        from rl_onoff.rewards import Response, weighted
        from rl_onoff.tasks import score_many

        task = self.task
        texts = [self.tokenizer.decode(ids, skip_special_tokens=True) for ids in token_lists]
        verdicts = score_many(texts, references, task.format, task.ignore_think,
                              task.reward_timeout)
        responses = [Response(text, ref, len(ids), finish, self.max_new_tokens, v.status,
                              v.reward >= 1.0, question)
                     for text, ref, ids, finish, v, question in zip(
                         texts, references, token_lists, finishes, verdicts,
                         questions or [""] * len(texts))]
        rewards = weighted(self.reward, self.shaping, responses)
        return texts, [Scored(r, v.reward >= 1.0, v.extracted, v.status)
                       for r, v in zip(rewards, verdicts)]
