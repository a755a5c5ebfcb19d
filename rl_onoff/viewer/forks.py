"""Where a prompt's answers fork: the token at which a response parts from the other outcome.

A prompt's responses are token sequences from the same start. Two of them share
their first tokens and part at some position; up to it the model read the same
text, so its distribution there (01's entropy at that position) is the same for
both, and one token drawn differently led to a different answer. A response's
outcome fork is where it parts from the closest response of the other outcome
(correct vs incorrect; truncated responses gave no answer and take no part).
Entropy says the model hesitated; the fork says whether the hesitation changed
the answer.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd

from rl_onoff.distributions.store import Distributions
from rl_onoff.viewer.data import outcome

OPPOSITE = {"correct": "incorrect", "incorrect": "correct"}
COLUMNS = ["question", "response", "outcome", "fork at", "token", "entropy there",
           "parts from", "its token"]


class Fork(NamedTuple):
    sample: int
    position: int   # the first token where `sample` and `other` differ
    other: int      # the response of the other outcome sharing the longest prefix with it


def common_prefix(a: np.ndarray, b: np.ndarray) -> int:
    """How many leading tokens `a` and `b` share."""
    n = min(len(a), len(b))
    differ = np.flatnonzero(np.asarray(a[:n]) != np.asarray(b[:n]))
    return int(differ[0]) if len(differ) else n


def outcome_forks(token_ids: list[np.ndarray], outcomes: list[str]) -> list[Fork]:
    """The fork of every correct or incorrect response that has a response of the other
    outcome (ties: the lowest-numbered one). None where the closest one is a continuation
    of it (or it of the other): they never drew different tokens."""
    forks = []
    for s, (ids, kind) in enumerate(zip(token_ids, outcomes)):
        others = [t for t, other in enumerate(outcomes) if other == OPPOSITE.get(kind)]
        if not others:
            continue
        other = max(others, key=lambda t: (common_prefix(ids, token_ids[t]), -t))
        position = common_prefix(ids, token_ids[other])
        if position < min(len(ids), len(token_ids[other])):
            forks.append(Fork(s, position, other))
    return forks


def fork_table(run: Distributions, questions: list[int]) -> pd.DataFrame:
    """One row per response with an outcome fork, over `questions`: where it parts, the
    tokens each side drew there, and the entropy there (the same for both)."""
    token_ids, entropy = run.array("token_ids"), run.array("entropy")
    rows = []
    for q in questions:
        samples = run.questions[q]["samples"]
        spans = [slice(rec["start"], rec["start"] + rec["length"]) for rec in samples]
        ids = [token_ids[span] for span in spans]
        outcomes = [outcome(rec) for rec in samples]
        for fork in outcome_forks(ids, outcomes):
            at = fork.position
            rows.append({"question": q, "response": fork.sample, "outcome": outcomes[fork.sample],
                         "fork at": at,
                         "token": run.token_string(ids[fork.sample][at]),
                         "entropy there": float(entropy[spans[fork.sample]][at]),
                         "parts from": fork.other,
                         "its token": run.token_string(ids[fork.other][at])})
    return pd.DataFrame(rows, columns=COLUMNS)
