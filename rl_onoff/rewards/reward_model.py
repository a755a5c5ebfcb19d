"""Rewards from a model, by hub id or local path, loaded through rl_onoff.models.

    reward: rm:PATH_OR_HUB_ID     an outcome reward model: a sequence-classification head with
                                  one output, its value on (question, response) is the reward
    reward: prm:PATH_OR_HUB_ID    a process reward model with the interface of
                                  Qwen2.5-Math-PRM-7B: the response's steps (its lines) joined
                                  by the step token <extra_0>, a two-way head, and per step the
                                  probability of "good" at that token; the reward is the
                                  lowest step's (a chain is as good as its worst step)

Neither reads the reference answer. The model loads on first use (not when the config is
checked), once per name, on the CPU or the first GPU, in eval mode. Tested here with tiny
models built in code; a checkpoint that ships its own modelling code (Qwen2.5-Math-PRM-7B
does) is not loaded, since trust_remote_code stays off for reward models.
"""

from __future__ import annotations

from functools import cached_property

STEP_TOKEN = "<extra_0>"
PREFIXES = {"rm:": "outcome", "prm:": "process"}


def is_reward_model(name: str) -> bool:
    return name.startswith(tuple(PREFIXES))


class ModelReward:
    """A reward registry entry backed by a model: call it with a list of Responses."""

    def __init__(self, name: str, trust_remote_code: bool = False):
        prefix = next(p for p in PREFIXES if name.startswith(p))
        self.kind, self.source = PREFIXES[prefix], name[len(prefix):]
        self.trust_remote_code = trust_remote_code

    @cached_property
    def loaded(self):
        from rl_onoff.models import load_model

        head = "sequence_classification" if self.kind == "outcome" else "token_classification"
        return load_model(self.source, "auto", "auto", head=head,
                          trust_remote_code=self.trust_remote_code)

    def __call__(self, responses) -> list[float]:
        import torch

        model, tokenizer = self.loaded
        device = next(model.parameters()).device
        scores = []
        with torch.inference_mode():
            for r in responses:
                text = self._text(r)
                ids = tokenizer(text, return_tensors="pt", truncation=True,
                                max_length=getattr(tokenizer, "model_max_length", None) or 4096)
                logits = model(**{k: v.to(device) for k, v in ids.items()}).logits.float()
                scores.append(self._score(logits[0], ids["input_ids"][0], tokenizer))
        return scores

    def _text(self, response) -> str:
        if self.kind == "outcome":
            return f"{response.question}\n{response.text}"
        steps = [line.strip() for line in response.text.split("\n") if line.strip()]
        return f"{response.question}\n" + "".join(f"{step}{STEP_TOKEN}" for step in steps)

    def _score(self, logits, input_ids, tokenizer) -> float:
        if self.kind == "outcome":
            return float(logits.reshape(-1)[0])
        step = tokenizer.convert_tokens_to_ids(STEP_TOKEN)
        at = (input_ids == step).nonzero().flatten()
        if len(at) == 0:
            return 0.0  # no step to judge
        return float(logits[at.to(logits.device)].softmax(-1)[:, 1].min())
