"""Rewards by name: the one registry 03 (search objective, shaping) and 05 (policy gradient)
choose from, and where a user's own reward plugs in.

A reward scores a batch of finished responses, `fn(responses) -> list[float]`, each a
`Response` (text, reference, question, token count, why it ended, and what the math-verify
scorer extracted, which every stage computes anyway). Names:

    math_verify  1 when the final answer equals the reference (math-verify), else 0
    format       1 when an answer could be extracted (a \\boxed{} or <answer>)
    length       response tokens / max_new_tokens (a negative weight favours short answers)
    truncated    1 when the response hit the token limit instead of ending
    step_check   the share of worked lines `a op b = c` that are arithmetically right
                 (reference-free; 0 with no such line)
    rm:MODEL     an outcome reward model's score; prm:MODEL a process reward model's lowest
                 step score (rl_onoff.rewards.reward_model)

`module:function` names a user's function with the same signature. Adding one of ours:
write the function here (or in a module of this package) and decorate it with
`@register("name")`.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable

from rl_onoff.config import ConfigError, suggest


@dataclass(frozen=True)
class Response:
    text: str
    reference: str
    num_tokens: int
    finish_reason: str          # eos | stop | length
    max_new_tokens: int
    status: str                 # the math-verify scorer's: ok | no_answer | timeout | error
    correct: bool               # the math-verify scorer's verdict
    question: str = ""


RewardFn = Callable[[list[Response]], list[float]]
REWARDS: dict[str, RewardFn] = {}


def register(name: str):
    """Decorator: make `fn(responses) -> list[float]` available by `name`."""
    def wrap(fn: RewardFn) -> RewardFn:
        REWARDS[name] = fn
        return fn
    return wrap


_MODELS: dict[str, RewardFn] = {}


def get(name: str) -> RewardFn:
    """A registered reward, a reward model (`rm:` or `prm:` and a hub id or path; see
    rl_onoff.rewards.reward_model), or a user's `module:function`."""
    from rl_onoff.rewards.reward_model import ModelReward, is_reward_model

    if name in REWARDS:
        return REWARDS[name]
    if is_reward_model(name):
        return _MODELS.setdefault(name, ModelReward(name))
    if ":" in name:
        module, attr = name.split(":", 1)
        try:
            fn = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as err:
            raise ConfigError(f"reward {name!r}: cannot import it ({err}); give module:function "
                              "of a function importable from the working directory") from err
        if not callable(fn):
            raise ConfigError(f"reward {name!r} is not a function")
        return fn
    raise ConfigError(f"unknown reward {name!r}{suggest(name, list(REWARDS))}; allowed: "
                      f"{', '.join(REWARDS)}, rm:MODEL, prm:MODEL, or module:function")


def check_name(name: str, path: str) -> None:
    """Config-time check: `path` names a reward that exists (user functions are imported)."""
    try:
        get(name)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


def weighted(main: str | None, shaping: dict[str, float], responses: list[Response]) -> list[float]:
    """main reward (none: 0) plus sum of weight * term over `shaping`."""
    total = [0.0] * len(responses)
    for name, weight in ([(main, 1.0)] if main else []) + list(shaping.items()):
        for i, value in enumerate(get(name)(responses)):
            total[i] += weight * float(value)
    return total


@register("math_verify")
def math_verify(responses: list[Response]) -> list[float]:
    return [float(r.correct) for r in responses]


@register("format")
def has_answer(responses: list[Response]) -> list[float]:
    return [float(r.status != "no_answer") for r in responses]


@register("length")
def length(responses: list[Response]) -> list[float]:
    return [r.num_tokens / r.max_new_tokens for r in responses]


@register("truncated")
def truncated(responses: list[Response]) -> list[float]:
    return [float(r.finish_reason == "length") for r in responses]


_NUMBER = r"-?\d+(?:\.\d+)?"
_STEP = re.compile(rf"({_NUMBER})\s*([+\-*/x×])\s*({_NUMBER})\s*=\s*({_NUMBER})")


def step_correct(line_match: re.Match) -> bool:
    """Whether one worked step `a op b = c` is arithmetically right (exact rationals)."""
    a, op, b, c = line_match.groups()
    a, b, c = Fraction(a), Fraction(b), Fraction(c)
    if op == "/" and b == 0:
        return False
    value = {"+": a + b, "-": a - b, "/": a / b if b else None}.get(op, a * b)
    return value == c


@register("step_check")
def step_check(responses: list[Response]) -> list[float]:
    out = []
    for r in responses:
        steps = list(_STEP.finditer(r.text))
        out.append(sum(step_correct(m) for m in steps) / len(steps) if steps else 0.0)
    return out
