"""Numbers 03-tree-search reports, computed from recorded rewards and token counts only.

Budget. A method's cost is the tokens it sampled from the model: for the tree its new
nodes plus refill forwards (rl_onoff.search.kv); for plain sampling either every response
token, or (prefix-shared sampling, the fair control for a method that shares prefixes)
only the tokens a sample adds to the trie of the samples before it. "At budget b" a method
has every response it completed until its running count reached b (the one that crosses b
included, so either may overshoot b by at most one response).

Reference-free numbers pick a response without the reference answer: the tree's vote over
its distinct leaves weighted by visits, maj@n of the samples. Oracle numbers (ORACLE) pick
with it: pass@n and "any leaf correct" always, best-by-reward and the Boltzmann sample when
the reward reads the reference (math_verify).
"""

from __future__ import annotations

import bisect
from itertools import accumulate

import numpy as np

from rl_onoff.stats import pass_at_k


def improvement_rate(rewards: list[float]) -> float | None:
    """Share of rollouts 2..K whose reward is >= the previous rollout's (None under 2 rollouts)."""
    if len(rewards) < 2:
        return None
    return sum(b >= a for a, b in zip(rewards, rewards[1:])) / (len(rewards) - 1)


def shuffled_improvement_rate(rewards: list[float]) -> float | None:
    """The improvement rate the same rewards would have on average in a random order:
    P(r_i >= r_j) over ordered pairs i != j. Above it, later rollouts do better than earlier ones."""
    n = len(rewards)
    if n < 2:
        return None
    values = sorted(rewards)
    # pairs (i, j), i != j, with r_i >= r_j: for each i, the r_j <= r_i, minus i itself
    at_least = sum(bisect.bisect_right(values, r) - 1 for r in rewards)
    return at_least / (n * (n - 1))


def first_correct(correct: list[bool]) -> int | None:
    """1-based index of the first correct rollout, None if none."""
    return next((i + 1 for i, c in enumerate(correct) if c), None)


def count_at_budget(lengths: list[int], budget: float) -> int:
    """How many items (in order) a method has at `budget`: until the running sum reaches it."""
    cumulative = list(accumulate(lengths))
    index = bisect.bisect_left(cumulative, budget)
    return min(index + 1, len(lengths))


def best_index(rewards: list[float]) -> int:
    """The highest reward; the first on ties."""
    return max(range(len(rewards)), key=lambda i: (rewards[i], -i))


def vote(labels: list[int | None], weights: list[float]) -> int | None:
    """The index of the first member of the cluster with the most weight (ties: the cluster
    seen first); None when nothing voted (no extracted answer)."""
    totals: dict[int, float] = {}
    for label, weight in zip(labels, weights):
        if label is not None:
            totals[label] = totals.get(label, 0.0) + weight
    if not totals:
        return None
    winner = max(sorted(totals), key=totals.__getitem__)
    return labels.index(winner)


def voted_correct(items: list[dict], weights: list[float]) -> bool:
    """Whether the weighted majority answer among `items` (each with `cluster`, `correct`) is
    right: reference-free selection, the reference only grades the choice."""
    chosen = vote([i["cluster"] for i in items], weights)
    return chosen is not None and bool(items[chosen]["correct"])


def sampling_at_budget(samples: list[dict], budget: float, count: str = "num_tokens") -> dict:
    """Plain sampling at `budget`, tokens counted by `count` (num_tokens: every token;
    new_tokens: distinct prefixes only, the prefix-shared control): best-of-n by reward,
    maj@n (reference-free) and unbiased pass@n over the whole pool."""
    n = count_at_budget([s[count] for s in samples], budget)
    first = samples[:n]
    best = first[best_index([s["reward"] for s in first])]
    correct = sum(s["correct"] for s in samples)
    return {"n": n, "tokens": sum(s[count] for s in first),
            "best_of_n_correct": bool(best["correct"]), "best_of_n_reward": best["reward"],
            "maj_correct": voted_correct(first, [1.0] * n),
            "pass_at_n": pass_at_k(len(samples), correct, n)}


def tree_values(tree: dict) -> dict:
    """One tree's per-question values: best by reward, visit-weighted vote over its distinct
    leaves, its Boltzmann sample, the walk's chance of a correct answer, any leaf correct."""
    leaves = tree["responses"]
    return {"best": float(tree["best"]["correct"]),
            "vote": float(voted_correct(leaves, [leaf["visits"] for leaf in leaves])),
            "boltzmann": float(tree["boltzmann"]["correct"]),
            "boltzmann_expected": tree["boltzmann_p_correct"],
            "any_correct": float(any(leaf["correct"] for leaf in leaves))}


def sampling_values(samples: list[dict], budget: float) -> dict:
    """Both sampling controls at one tree's budget, per question."""
    out = {}
    for prefix, count in (("sampling", "num_tokens"), ("prefix_shared", "new_tokens")):
        at = sampling_at_budget(samples, budget, count)
        out.update({f"{prefix}_best_of_n": float(at["best_of_n_correct"]),
                    f"{prefix}_maj": float(at["maj_correct"]),
                    f"{prefix}_pass_at_n": at["pass_at_n"], f"{prefix}_samples": at["n"]})
    return out


# metric -> whether it reads the reference to pick (always), or only through the reward ("r")
ORACLE = {"tree_best": "r", "tree_vote": False, "tree_boltzmann": "r",
          "tree_boltzmann_expected": "r", "tree_any_correct": True,
          "sampling_best_of_n": "r", "sampling_maj": False, "sampling_pass_at_n": True,
          "prefix_shared_best_of_n": "r", "prefix_shared_maj": False,
          "prefix_shared_pass_at_n": True, "greedy": False, "single_sample": False}
# (tree metric, control metric) pairs whose paired differences every summary reports
COMPARISONS = (("tree_vote", "prefix_shared_maj"), ("tree_vote", "sampling_maj"),
               ("tree_vote", "blind_vote"), ("tree_best", "prefix_shared_best_of_n"),
               ("tree_best", "sampling_best_of_n"), ("tree_best", "blind_best"))


def is_oracle(metric: str, reward_reads_reference: bool) -> bool:
    flag = ORACLE[metric.replace("blind_", "tree_")]
    return reward_reads_reference if flag == "r" else flag


def question_values(tree: dict, blind: dict, samples: list[dict]) -> dict:
    """Every accuracy of one setting on one question (one seed): the tree, its reward-blind
    twin, and the sampling controls at the tree's budget."""
    out = {f"tree_{k}": v for k, v in tree_values(tree).items()}
    out.update({f"blind_{k}": v for k, v in tree_values(blind).items()})
    out.update(sampling_values(samples, tree["budget_tokens"]))
    return out


def setting_summary(values: list[list[dict]], trees: list[list[dict]], reads_reference: bool,
                    resamples: int) -> dict:
    """Accuracies with intervals and paired differences for one setting; `values` and `trees`
    are indexed [question][seed]."""
    from rl_onoff.search.intervals import difference, interval

    def grid(key):
        return np.array([[cell[key] for cell in row] for row in values], dtype=float)

    accuracy = {}
    for key in values[0][0]:
        if key.endswith("_samples"):
            continue
        accuracy[key] = {**interval(grid(key), resamples), "oracle": is_oracle(key, reads_reference)}
    differences = {f"{a} - {b}": difference(grid(a), grid(b), resamples) for a, b in COMPARISONS}
    cells = [t for row in trees for t in row]
    rollouts = [r for t in cells for r in t["rollouts"]]
    return {
        "accuracy": accuracy, "differences": differences,
        "mean_budget_tokens": _mean(t["budget_tokens"] for t in cells),
        "mean_samples_at_budget": {k: _mean(cell[f"{k}_samples"] for row in values for cell in row)
                                   for k in ("sampling", "prefix_shared")},
        "mean_distinct_responses": _mean(len(t["responses"]) for t in cells),
        "empty_rollout_share": _mean(r["new_tokens"] == 0 for r in rollouts),
        "solved_share": _mean(t["rollouts_to_first_correct"] is not None for t in cells),
        "mean_rollouts_to_first_correct": _mean(t["rollouts_to_first_correct"] for t in cells),
        "mean_improvement_rate": _mean(t["improvement_rate"] for t in cells),
        "mean_shuffled_improvement_rate": _mean(t["shuffled_improvement_rate"] for t in cells),
        "forward_tokens_per_new_node": (sum(t["forward_tokens"] for t in cells) /
                                        max(1, sum(t["nodes"] for t in cells))),
        "seconds_per_question": _mean(t["seconds"] for t in cells),
    }


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None
