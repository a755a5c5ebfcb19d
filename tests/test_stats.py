"""pass@k, maj@n, maj@k, intervals and accuracy against brute-force and textbook computations."""

from __future__ import annotations

import itertools
import math
import random
import statistics

import numpy as np
import pytest

from rl_onoff.stats import (
    accuracy_stats,
    answer_clusters,
    format_table,
    ks_for,
    maj_at_k,
    majority_vote,
    mean_interval,
    pass_at_k,
    summarize,
)


def brute_force_pass_at_k(outcomes: list[bool], k: int) -> float:
    """The share of all k-subsets of the samples that contain a correct one."""
    subsets = list(itertools.combinations(outcomes, k))
    return sum(any(s) for s in subsets) / len(subsets)


@pytest.mark.parametrize("n", [1, 2, 5, 8])
def test_pass_at_k_equals_subset_enumeration(n):
    for c in range(n + 1):
        outcomes = [True] * c + [False] * (n - c)
        for k in range(1, n + 1):
            assert pass_at_k(n, c, k) == pytest.approx(brute_force_pass_at_k(outcomes, k))


def test_pass_at_k_rejects_impossible_counts():
    with pytest.raises(ValueError, match="0 <= c <= n"):
        pass_at_k(4, 5, 1)
    with pytest.raises(ValueError, match="1 <= k <= n"):
        pass_at_k(4, 1, 5)


def test_ks_are_powers_of_two_up_to_n():
    assert ks_for(8) == [1, 2, 4, 8]
    assert ks_for(6) == [1, 2, 4, 6]
    assert ks_for(1) == [1]


def test_majority_vote_uses_equivalence_and_first_seen_ties():
    same_number = lambda a, b: float(a) == float(b)  # noqa: E731
    assert majority_vote(["2", "3", "2.0", None, None], [0, 1, 0, 0, 0], same_number) == ("2", 0.0)
    assert majority_vote(["3", "2"], [1, 0], same_number) == ("3", 1.0)
    assert majority_vote([None, None], [0, 0], same_number) == (None, 0.0)


def test_accuracy_stats_by_hand():
    questions = [
        {"samples": [{"reward": 1.0}, {"reward": 0.0}, {"reward": 0.0}, {"reward": 0.0}],
         "maj_reward": 0.0},
        {"samples": [{"reward": 1.0}] * 4, "maj_reward": 1.0},
        {"samples": [{"reward": 0.0}] * 4, "maj_reward": 0.0},
    ]
    out = accuracy_stats(questions)
    assert out["avg@n"] == pytest.approx((0.25 + 1 + 0) / 3)
    assert out["pass@k"]["1"] == pytest.approx((0.25 + 1 + 0) / 3)
    assert out["pass@k"]["2"] == pytest.approx((0.5 + 1 + 0) / 3)  # 1 - C(3,2)/C(4,2) = 0.5
    assert out["pass@k"]["4"] == pytest.approx(2 / 3)
    assert out["maj@n"] == pytest.approx(1 / 3)


# --- maj@k, clusters, intervals, summaries --------------------------------------

def brute_force_maj_at_k(labels: list, rewards: list[float], k: int) -> float:
    """The mean over all k-subsets of the vote's reward; a tie pays the mean of the tied rewards."""
    first_reward = {}
    for label, reward in zip(labels, rewards):
        first_reward.setdefault(label, reward)
    total = 0.0
    subsets = list(itertools.combinations(range(len(labels)), k))
    for subset in subsets:
        votes = {}
        for i in subset:
            if labels[i] is not None:
                votes[labels[i]] = votes.get(labels[i], 0) + 1
        if votes:
            top = max(votes.values())
            tied = [label for label, count in votes.items() if count == top]
            total += sum(first_reward[label] for label in tied) / len(tied)
    return total / len(subsets)


def test_maj_at_k_equals_subset_enumeration():
    rng = random.Random(0)
    for _ in range(150):
        n = rng.randint(1, 9)
        labels = [rng.choice([0, 1, 2, 3, None]) for _ in range(n)]
        correct = {rng.choice([0, 1, 2, 3]), rng.choice([0, 1, 2, 3])}  # one or two right clusters
        rewards = [1.0 if label in correct else 0.0 for label in labels]
        got = maj_at_k(labels, rewards, list(range(1, n + 1)))
        for k in range(1, n + 1):
            assert got[k] == pytest.approx(brute_force_maj_at_k(labels, rewards, k), abs=1e-12), (labels, k)


def test_maj_at_k_splits_ties_and_uses_first_member_reward():
    # k = 2 of [A, B]: one subset, tied 1-1 between a right and a wrong cluster: 0.5.
    assert maj_at_k([0, 1], [1.0, 0.0], [1, 2]) == {1: pytest.approx(0.5), 2: pytest.approx(0.5)}
    # The cluster's reward is its first sample's, as in majority_vote.
    assert maj_at_k([0, 0], [0.0, 1.0], [2]) == {2: 0.0}
    assert maj_at_k([None, None], [0.0, 0.0], [1, 2]) == {1: 0.0, 2: 0.0}
    with pytest.raises(ValueError, match="1 <= k <= n"):
        maj_at_k([0, 1], [1.0, 0.0], [3])


def test_maj_at_k_stays_finite_for_large_n():
    # Two right answers among 1,198 unanswered samples: the vote is right when either is drawn.
    labels = [0, 0] + [None] * 1198  # C(1200, 600) overflows a float
    got = maj_at_k(labels, [1.0] * 2 + [0.0] * 1198, [600, 1200])
    assert got[600] == pytest.approx(1 - math.comb(1198, 600) / math.comb(1200, 600))
    assert got[1200] == pytest.approx(1.0)


def test_answer_clusters_follow_first_members():
    same_number = lambda a, b: float(a) == float(b)  # noqa: E731
    assert answer_clusters(["2", None, "3", "2.0", "3.00", "7"], same_number) == [0, None, 1, 0, 1, 2]
    assert answer_clusters([], same_number) == []


def test_mean_interval_against_the_textbook_formula():
    values = [0.25, 1.0, 0.0, 0.5, 0.75, 1.0, 0.0]
    se = statistics.stdev(values) / math.sqrt(len(values))
    mean = statistics.fmean(values)
    out = mean_interval(values)
    assert out.mean == pytest.approx(mean) and out.se == pytest.approx(se)
    assert (out.lo, out.hi) == (pytest.approx(mean - 1.959964 * se), pytest.approx(mean + 1.959964 * se))
    clipped = mean_interval([1.0] * 9 + [0.0])
    assert clipped.hi == 1.0 and clipped.lo == pytest.approx(0.9 - 1.959964 * 0.1)
    assert mean_interval([0.5]).se is None


def test_avg_interval_covers_the_truth_95_percent_of_the_time():
    """Questions of varied difficulty, n = 4 samples each: the interval must cover the true avg@n."""
    rng = np.random.default_rng(0)
    truth, covered, trials = 0.3, 0, 2000  # Beta(3, 7) difficulties have mean 0.3
    for _ in range(trials):
        difficulty = rng.beta(3, 7, size=60)
        per_question = rng.binomial(4, difficulty) / 4
        interval = mean_interval(per_question.tolist())
        covered += interval.lo <= truth <= interval.hi
    assert 0.93 <= covered / trials <= 0.97


def _question(rewards, clusters, lengths, level, maj_reward):
    return {"metadata": {"level": level}, "maj_reward": maj_reward,
            "samples": [{"reward": r, "cluster": c, "num_tokens": t, "extracted": None if c is None else str(c),
                         "finish_reason": "stop", "status": "ok"} for r, c, t in zip(rewards, clusters, lengths)]}


def test_summarize_reports_intervals_maj_at_k_and_lengths_by_outcome():
    questions = [
        _question([1.0, 0.0, 1.0, 0.0], [0, 1, 0, 1], [10, 20, 30, 40], 1, 1.0),
        _question([0.0, 0.0, 0.0, 1.0], [0, 0, None, 1], [5, 7, 9, 11], 1, 0.0),
        _question([1.0, 1.0, 1.0, 1.0], [0, 0, 0, 0], [2, 2, 2, 2], 2, 1.0),
    ]
    out = summarize(questions)
    per_question_avg = [0.5, 0.25, 1.0]
    assert out["avg@n"] == pytest.approx(statistics.fmean(per_question_avg))
    assert out["se"]["avg@n"] == pytest.approx(statistics.stdev(per_question_avg) / math.sqrt(3))
    assert out["ci95"]["maj@n"]["hi"] == 1.0
    # maj@2 by hand over the pairs 01, 02, 03, 12, 13, 23 (a 1-1 tie of right and wrong pays 0.5);
    # in q2 the unanswered s2 does not vote, so s2 + s3 is a win for the right cluster.
    q1 = (0.5 + 1 + 0.5 + 0.5 + 0 + 0.5) / 6
    q2 = (0 + 0 + 0.5 + 0 + 0.5 + 1) / 6
    assert out["maj@k"]["2"] == pytest.approx(statistics.fmean([q1, q2, 1.0]))
    assert set(out["maj@k"]) == {"1", "2", "4"} and set(out["se"]["maj@k"]) == {"1", "2", "4"}
    correct_lengths = [10, 30, 11, 2, 2, 2, 2]
    assert out["response_tokens_by_outcome"]["correct"]["mean"] == pytest.approx(statistics.fmean(correct_lengths))
    assert out["response_tokens_by_outcome"]["incorrect"]["count"] == 5
    level_1 = out["by_level"]["1"]
    assert level_1["avg@n"] == pytest.approx(0.375) and level_1["maj@k"]["1"] == pytest.approx((0.5 + 0.25) / 2)
    assert level_1["response_tokens_by_outcome"]["correct"]["max"] == 30
    assert out["by_level"]["2"]["se"]["avg@n"] is None  # one question: no interval
    table = format_table(out)
    assert f"{out['avg@n']:.3f}+-{1.959964 * out['se']['avg@n']:.3f}" in table
    assert "maj@4" in table and f"correct {statistics.fmean(correct_lengths):.1f}" in table


def test_summarize_without_clusters_omits_maj_at_k():
    questions = [_question([1.0, 0.0], [0, 1], [3, 4], 1, 1.0), _question([0.0, 0.0], [0, 0], [3, 4], 1, 0.0)]
    for q in questions:
        for s in q["samples"]:
            del s["cluster"]
    out = summarize(questions)
    assert "maj@k" not in out and "maj@k" not in out["se"]
    assert "maj@" in format_table(out) and "maj@1" not in format_table(out)
