"""Statistics over sampled responses: avg@n, pass@k, maj@n, maj@k, lengths, intervals.

Pure Python and numpy (no model code), so the numbers can be checked against
independent computations and reused by any stage that samples.

Uncertainty. Questions are the sampling unit: every metric is a mean over
questions of a per-question estimate (the share correct, unbiased pass@k,
the majority vote's reward, maj@k), so its standard error is the sample
standard deviation of those estimates (ddof=1) over sqrt(questions), and the
95% interval is mean +- 1.96 SE (the normal approximation), clipped to [0, 1].
The per-question spread already holds both the difference between questions
and the noise of a finite n, so no separate within-question term is needed.
A percentile bootstrap over questions gives nearly the same interval from 30
questions on, but is random (a seed to choose and report) and costs resamples;
the normal interval is deterministic and cheap. Below about 30 questions, or
with nearly every estimate 0 or 1, it is approximate (it can be too narrow).

maj@k. The expected correctness of a majority vote over k samples drawn
without replacement from the n, averaged over all C(n, k) subsets and
computed exactly (no Monte Carlo). Votes follow the samples' `cluster`
labels (`answer_clusters`: math-equivalence classes; no answer, no vote); a
cluster's reward is that of its first sample, as in `majority_vote`. A vote
tied between r clusters earns the mean of their rewards (ties split evenly,
the expectation of a random tie-break); a subset without votes earns 0. So
maj@k at k = n can differ from maj@n, which keeps the stored vote's
first-seen tie rule, only on questions whose full vote is tied.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from math import comb, lgamma
from typing import Callable

import numpy as np

Z95 = 1.959963984540054  # the standard normal's 97.5% quantile
INTERVAL_METHOD = ("normal over questions: mean +- 1.96 * SE, SE = std(per-question estimates, "
                   "ddof=1) / sqrt(questions), clipped to [0, 1]")


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k (Chen et al. 2021): 1 - C(n-c, k) / C(n, k), for n samples, c correct."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass_at_k needs 0 <= c <= n and 1 <= k <= n; got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - comb(n - c, k) / comb(n, k)


def ks_for(n: int) -> list[int]:
    """k = 1, 2, 4, ... up to n (and n itself)."""
    ks, k = [], 1
    while k <= n:
        ks.append(k)
        k *= 2
    if ks[-1] != n:
        ks.append(n)
    return ks


def answer_clusters(answers: list[str | None],
                    equivalent: Callable[[str, str], bool]) -> list[int | None]:
    """Each answer's math-equivalence class: 0, 1, ... in order of first appearance; None: no answer.

    An answer joins the first class whose first member it is equivalent to.
    """
    representatives: list[str] = []
    labels: list[int | None] = []
    for answer in answers:
        if answer is None:
            labels.append(None)
            continue
        label = next((i for i, rep in enumerate(representatives) if equivalent(rep, answer)), None)
        if label is None:
            label = len(representatives)
            representatives.append(answer)
        labels.append(label)
    return labels


def majority_vote(answers: list[str | None], rewards: list[float],
                  equivalent: Callable[[str, str], bool] | None = None,
                  labels: list[int | None] | None = None) -> tuple[str | None, float]:
    """(the most common answer by math-equivalence, its reward); ties go to the first seen.

    Samples without an extracted answer do not vote; with no votes the reward is 0. Pass the
    `labels` of answer_clusters when they are known (no comparison is then repeated).
    """
    if labels is None:
        labels = answer_clusters(answers, equivalent)
    counts = Counter(label for label in labels if label is not None)
    if not counts:
        return None, 0.0
    best = max(sorted(counts), key=counts.__getitem__)  # max keeps the first of equal sizes
    first = labels.index(best)
    return answers[first], float(rewards[first])


def maj_at_k(labels: list[int | None], rewards: list[float], ks: list[int]) -> dict[int, float]:
    """Exact expected majority-vote reward over all k-subsets of the samples, for each k in `ks`.

    `labels` are the samples' clusters (None: no vote); ties split evenly (see the module notes).
    For each correct cluster j and each count t of its samples in the subset, a
    dynamic programme over the clusters that could reach t counts the ways to
    fill the rest of the subset with no cluster above t, and how many sit at t.
    Counts are kept divided by binomials (hypergeometric weights), so no n overflows.
    """
    n = len(labels)
    if any(not 1 <= k <= n for k in ks):
        raise ValueError(f"maj_at_k needs 1 <= k <= n = {n}; got ks={ks}")
    log_comb = _log_comb_table(n)
    sizes = Counter(label for label in labels if label is not None)
    unvoted = n - sum(sizes.values())
    out = np.zeros(len(ks))
    for label, size in sizes.items():
        reward = float(rewards[labels.index(label)])
        if reward == 0.0:
            continue
        others = [c for other, c in sizes.items() if other != label]
        for t in range(1, size + 1):
            rest, ways = _ways_at_most(t, others, unvoted, n, log_comb)
            for i, k in enumerate(ks):
                s = k - t
                if 0 <= s <= rest:
                    weight = np.exp(log_comb(size, t) + log_comb(rest, s) - log_comb(n, k))
                    out[i] += reward * weight * float(ways[s] @ (1.0 / np.arange(1, ways.shape[1] + 1)))
    return {k: float(value) for k, value in zip(ks, out)}


def _ways_at_most(t: int, others: list[int], unvoted: int, n: int, log_comb) -> tuple[int, np.ndarray]:
    """(N, W): W[s, r] = share of the C(N, s) ways to draw s of the N other samples in which
    no other cluster has more than t and exactly r clusters have t."""
    free = unvoted + sum(c for c in others if c < t)  # these can never reach t
    rivals = [c for c in others if c >= t]
    ways = np.zeros((n + 1, len(rivals) + 1))
    ways[:free + 1, 0] = 1.0
    drawn_from = free
    for c in rivals:
        drawn = np.arange(drawn_from + 1)
        grown = np.zeros_like(ways)
        for x in range(t + 1):  # samples taken from this cluster (c >= t)
            share = np.exp(log_comb(c, x) + log_comb(drawn_from, drawn) - log_comb(drawn_from + c, drawn + x))
            part = share[:, None] * ways[:drawn_from + 1]
            if x < t:
                grown[x:x + drawn_from + 1] += part
            else:  # one more cluster tied at t
                grown[x:x + drawn_from + 1, 1:] += part[:, :-1]
        ways = grown
        drawn_from += c
    return drawn_from, ways


def _log_comb_table(n: int):
    """log C(a, b) for 0 <= b <= a <= n, vectorised over numpy arrays."""
    log_factorial = np.array([lgamma(i + 1) for i in range(n + 1)])

    def log_comb(a, b):
        return log_factorial[a] - log_factorial[b] - log_factorial[np.subtract(a, b)]

    return log_comb


@dataclass(frozen=True)
class Interval:
    """A mean over questions, its standard error and 95% interval (None below 2 questions)."""

    mean: float
    se: float | None
    lo: float | None
    hi: float | None


def mean_interval(values: list[float]) -> Interval:
    """The mean of per-question estimates with its normal 95% interval (module notes)."""
    arr = np.asarray(values, dtype=float)
    mean = float(arr.mean())
    if len(arr) < 2:
        return Interval(mean, None, None, None)
    se = float(arr.std(ddof=1) / np.sqrt(len(arr)))
    return Interval(mean, se, max(0.0, mean - Z95 * se), min(1.0, mean + Z95 * se))


def length_stats(lengths: list[int]) -> dict:
    """Response lengths in tokens; None where there are none to describe."""
    if not lengths:
        return {"count": 0, "mean": None, "median": None, "p90": None, "max": None}
    arr = np.asarray(lengths)
    return {"count": len(arr), "mean": float(arr.mean()), "median": float(np.median(arr)),
            "p90": float(np.percentile(arr, 90)), "max": int(arr.max())}


def accuracy_stats(questions: list[dict]) -> dict:
    """avg@n, pass@k, maj@n and (where samples carry `cluster`) maj@k, with standard errors
    and 95% intervals, over questions carrying `samples` (with `reward`) and `maj_reward`."""
    n = min(len(q["samples"]) for q in questions)
    ks = ks_for(n)
    correct = [sum(s["reward"] >= 1.0 for s in q["samples"][:n]) for q in questions]
    per_question = {
        "avg@n": [c / n for c in correct],
        "pass@k": {str(k): [pass_at_k(n, c, k) for c in correct] for k in ks},
        "maj@n": [q["maj_reward"] for q in questions],
    }
    if all("cluster" in s for q in questions for s in q["samples"][:n]):
        votes = [maj_at_k([s["cluster"] for s in q["samples"][:n]],
                          [s["reward"] for s in q["samples"][:n]], ks) for q in questions]
        per_question["maj@k"] = {str(k): [v[k] for v in votes] for k in ks}
    intervals = _map_leaves(mean_interval, per_question)
    return {
        "questions": len(questions),
        "n": n,
        **_map_leaves(lambda i: i.mean, intervals),
        "se": _map_leaves(lambda i: i.se, intervals),
        "ci95": _map_leaves(lambda i: {"lo": i.lo, "hi": i.hi}, intervals),
        "interval_method": INTERVAL_METHOD,
    }


def _map_leaves(function, tree: dict) -> dict:
    """`tree` (nested dicts) with `function` applied to each value that is not a dict."""
    return {key: _map_leaves(function, value) if isinstance(value, dict) else function(value)
            for key, value in tree.items()}


def group_stats(questions: list[dict]) -> dict:
    """Accuracy with intervals and lengths split by outcome, for one set of questions."""
    samples = [s for q in questions for s in q["samples"]]
    return {
        **accuracy_stats(questions),
        "response_tokens_by_outcome": {
            "correct": length_stats([s["num_tokens"] for s in samples if s["reward"] >= 1.0]),
            "incorrect": length_stats([s["num_tokens"] for s in samples if s["reward"] < 1.0]),
        },
    }


def summarize(questions: list[dict]) -> dict:
    """Everything statistics.json reports that depends on the samples alone."""
    samples = [s for q in questions for s in q["samples"]]
    total = max(1, len(samples))
    out = {
        **group_stats(questions),
        "response_tokens": length_stats([s["num_tokens"] for s in samples]),
        "truncation_rate": sum(s["finish_reason"] == "length" for s in samples) / total,
        "extraction_failure_rate": sum(s["status"] == "no_answer" for s in samples) / total,
        "timeouts": sum(s["status"] == "timeout" for s in samples),
        "samples": len(samples),
    }
    for key in ("level", "subject"):
        groups = defaultdict(list)
        for q in questions:
            if q["metadata"].get(key) is not None:
                groups[str(q["metadata"][key])].append(q)
        if len(groups) > 1:
            out[f"by_{key}"] = {name: group_stats(group)
                                for name, group in sorted(groups.items(), key=_natural)}
    return out


def _natural(item):
    name = item[0]
    return (0, int(name), "") if name.isdigit() else (1, 0, name)


def format_table(stats: dict) -> str:
    """The statistics as plain-text tables for the terminal; +- is the 95% interval's half-width."""
    groups = [("all", stats)] + [(f"{key[3:]} {name}", group) for key in ("by_level", "by_subject")
                                 for name, group in stats.get(key, {}).items()]
    ks = list(stats["pass@k"])
    columns = [("avg@n", ("avg@n",)), *[(f"pass@{k}", ("pass@k", k)) for k in ks], ("maj@n", ("maj@n",))]
    lines = _table(groups, columns)
    if "maj@k" in stats:
        lines += [""] + _table(groups, [(f"maj@{k}", ("maj@k", k)) for k in stats["maj@k"]])
    lengths = stats["response_tokens"]
    by_outcome = stats["response_tokens_by_outcome"]
    lines.append(f"+-: 95% interval half-width (1.96 SE over questions). n={stats['n']} "
                 f"samples/question, {stats['samples']} samples; response tokens mean "
                 f"{_number(lengths['mean'], 1)} (correct {_number(by_outcome['correct']['mean'], 1)}, "
                 f"incorrect {_number(by_outcome['incorrect']['mean'], 1)}), median "
                 f"{_number(lengths['median'], 0)}, p90 {_number(lengths['p90'], 0)}; truncated "
                 f"{stats['truncation_rate']:.1%}, no answer {stats['extraction_failure_rate']:.1%}, "
                 f"timeouts {stats['timeouts']}")
    return "\n".join(lines)


def _table(groups: list[tuple[str, dict]], columns: list[tuple[str, tuple]]) -> list[str]:
    header = ["", "questions", *[name for name, _ in columns]]
    rows = [[name, str(group["questions"]), *[_cell(group, path) for _, path in columns]]
            for name, group in groups]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in [header, *rows]]


def _cell(group: dict, path: tuple) -> str:
    """`0.412+-0.031`, `0.412` without an interval, `-` where the group lacks the metric."""
    value, se = group, group.get("se", {})
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
        se = se.get(key) if isinstance(se, dict) else None
    if value is None:
        return "-"
    return f"{value:.3f}" if se is None else f"{value:.3f}+-{Z95 * se:.3f}"


def _number(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"
