"""03-tree-search: backup math, convergence to p * exp(lam r), the KV cache, the stage's numbers."""

from __future__ import annotations

import itertools
import json
import math
import random
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from rl_onoff.config import ConfigError, load_config
from rl_onoff.search import metrics
from rl_onoff.search.dts import Settings, iterate
from rl_onoff.search.tree import (Tree, ancestors, backup, best_terminal, boltzmann_walk, is_full,
                                  tokens, uct_child, walk_probabilities)
from rl_onoff.stage import StageError

# ---------------------------------------------------------------------------
# A toy "model": 3 tokens + EOS, responses of at most 3 tokens, a fixed p(next | prefix).

EOS, VOCAB, MAX_LEN = 0, 4, 3


def toy_probs(prefix: tuple) -> list[float]:
    weights = random.Random(str(prefix)).choices(range(1, 6), k=VOCAB)
    return [w / sum(weights) for w in weights]


def toy_reward(y: tuple) -> float:
    return (y.count(2) + (y[-1:] == (3,))) / 3


def toy_outcomes(prefix: tuple = ()):
    if (prefix and prefix[-1] == EOS) or len(prefix) == MAX_LEN:
        yield prefix
        return
    for t in range(VOCAB):
        yield from toy_outcomes(prefix + (t,))


def toy_prob(y: tuple) -> float:
    return math.prod(toy_probs(y[:i])[t] for i, t in enumerate(y))


def tilted(lam: float, reward=toy_reward) -> dict:
    """The target p(y) exp(lam r(y)) / Z by enumeration."""
    weights = {y: toy_prob(y) * math.exp(lam * reward(y)) for y in toy_outcomes()}
    total = sum(weights.values())
    return {y: w / total for y, w in weights.items()}


class ToyPolicy:
    """The dts policy interface over toy_probs (no model, no cache)."""

    def __init__(self, rng: random.Random):
        self.rng = rng

    def draw(self, tree, node) -> int:
        return self.rng.choices(range(VOCAB), toy_probs(tuple(tokens(node))))[0]

    def _add(self, tree, node, token):
        depth = node.depth + 1
        finish = "eos" if token == EOS else "length" if depth >= MAX_LEN else None
        return tree.add_child(node, token, terminal=finish is not None, finish=finish)

    def rollout(self, starts):
        leaves = []
        for tree, node, token in starts:
            child = self._add(tree, node, token)
            while not child.terminal:
                child = self._add(tree, child, self.draw(tree, child))
            leaves.append(child)
        return leaves


def toy_search(rollouts: int, settings: Settings, seed: int = 0, reward=toy_reward) -> Tree:
    rng = random.Random(seed)
    tree, policy = Tree(), ToyPolicy(rng)
    score = lambda pairs: [reward(tuple(tokens(leaf))) for _, leaf in pairs]  # noqa: E731
    for k in range(1, rollouts + 1):
        iterate([tree], policy, score, settings, rng, k)
    return tree


def chi_square_p_value(counts: dict, probs: dict) -> float:
    """Pearson's test (cells expected < 5 pooled); p-value by the Wilson-Hilferty approximation."""
    n = sum(counts.values())
    cells, pooled_obs, pooled_exp = [], 0, 0.0
    for y, p in probs.items():
        if n * p < 5:
            pooled_obs, pooled_exp = pooled_obs + counts.get(y, 0), pooled_exp + n * p
        else:
            cells.append((counts.get(y, 0), n * p))
    if pooled_exp > 0:
        cells.append((pooled_obs, pooled_exp))
    stat = sum((o - e) ** 2 / e for o, e in cells)
    k = len(cells) - 1
    z = ((stat / k) ** (1 / 3) - (1 - 2 / (9 * k))) / math.sqrt(2 / (9 * k))
    return 0.5 * math.erfc(z / math.sqrt(2))


# ---------------------------------------------------------------------------
# The backup on a hand-built tree


def hand_tree():
    """root -> a -> {x: r=1 (drawn 3 times), y: r=0}; root -> b: r=0.5 (terminal)."""
    tree = Tree()
    a = tree.add_child(tree.root, 1)
    x = tree.add_child(a, 5, terminal=True, finish="eos")
    y = tree.add_child(a, 6, terminal=True, finish="eos")
    b = tree.add_child(tree.root, 2, terminal=True, finish="eos")
    x.draws = 3
    x.reward, y.reward, b.reward = 1.0, 0.0, 0.5
    return tree, a, x, y, b


def test_backup_equals_the_formula_on_a_hand_built_tree():
    lam = 3.0
    tree, a, x, y, b = hand_tree()
    backup(x, lam)
    # only x visited below a, only a below the root: values pass up unchanged
    assert (a.value, tree.root.value) == (1.0, 1.0)
    assert (x.visits, a.visits, tree.root.visits, y.visits) == (1, 1, 1, 0)
    backup(y, lam)
    backup(b, lam)
    # independent: log-mean-exp over draws, in numpy
    v_a = np.log((3 * np.exp(lam * 1.0) + 1 * np.exp(lam * 0.0)) / 4) / lam
    v_root = np.log((np.exp(lam * v_a) + np.exp(lam * 0.5)) / 2) / lam
    assert a.value == pytest.approx(v_a, rel=1e-12)
    assert tree.root.value == pytest.approx(v_root, rel=1e-12)
    assert (tree.root.visits, a.visits, b.visits) == (3, 2, 1)
    # every draw once: the "(1/lam) log mean over visited children of exp(lam v)"
    x.draws = 1
    backup(y, lam)
    assert a.value == pytest.approx(np.log(np.mean(np.exp(lam * np.array([1.0, 0.0])))) / lam)
    # a large lam makes the soft value the max, a small one the (draw-weighted) mean
    backup(y, 500.0)
    assert a.value == pytest.approx(1.0, abs=0.01)
    x.draws = 3
    backup(y, 1e-6)
    assert a.value == pytest.approx(0.75, abs=1e-4)


def test_walk_probabilities_widening_and_uct_on_the_hand_built_tree():
    lam = 2.0
    tree, a, x, y, b = hand_tree()
    for leaf in (x, y, b):
        backup(leaf, lam)
    probs = walk_probabilities(tree.root, lam)
    step_a = math.exp(lam * a.value) / (math.exp(lam * a.value) + math.exp(lam * 0.5))
    step_x = 3 * math.exp(lam) / (3 * math.exp(lam) + 1)
    assert probs[x] == pytest.approx(step_a * step_x)
    assert probs[y] == pytest.approx(step_a * (1 - step_x))
    assert probs[b] == pytest.approx(1 - step_a)
    counts = {leaf: 0 for leaf in (x, y, b)}
    rng = random.Random(0)
    for _ in range(4000):
        counts[boltzmann_walk(tree.root, lam, rng)] += 1
    assert chi_square_p_value(counts, probs) > 1e-3
    assert best_terminal(tree, lam) is x
    # widening counts draws against the coming visit: root has 2 draws, N = 3 visits
    assert is_full(tree.root, 1.0, 0.5)          # 2 >= (3 + 1)^0.5
    assert not is_full(tree.root, 1.1, 0.5)      # 2 < 1.1 * 2
    assert not is_full(tree.root, 1.0, 1.0)      # 2 < 4
    assert not is_full(x, 1.0, 0.5)              # no children
    # uct: argmax of v + c sqrt(ln N / n)
    assert uct_child(tree.root, 0.0) is a        # v(a) > 0.5
    assert uct_child(tree.root, 10.0) is b       # fewer visits, bigger bonus
    tree.add_child(tree.root, 3, terminal=True, finish="eos")
    assert uct_child(tree.root, 0.0).visits == 0  # unvisited first


def test_a_fresh_one_draw_path_is_not_full_so_rollout_two_draws_anew():
    tree = toy_search(1, Settings(widen_c=1.0, widen_alpha=0.5))
    node = tree.root
    while not node.terminal:                     # one rollout: a path of one-draw nodes
        assert node.visits == 1 and not is_full(node, 1.0, 0.5)
        (node,) = node.children.values()
    for seed in range(20):
        tree = toy_search(2, Settings(widen_c=1.0, widen_alpha=0.5), seed=seed)
        assert sum(c.draws for c in tree.root.children.values()) == 2  # drew at the root again


def test_boltzmann_samples_approach_the_tilted_target():
    lam = 2.0
    settings = Settings(lam=lam, widen_c=1.0, widen_alpha=0.8)
    target = tilted(lam)
    prior = {y: toy_prob(y) for y in target}
    assert 0.5 * sum(abs(prior[y] - target[y]) for y in target) > 0.15  # the tilt matters

    def tv(tree):
        probs = {tuple(tokens(n)): p for n, p in walk_probabilities(tree.root, lam).items()}
        return 0.5 * sum(abs(probs.get(y, 0.0) - p) for y, p in target.items())

    distances = [tv(toy_search(r, settings, seed=1)) for r in (200, 2000, 20000)]
    assert distances[0] > distances[1] > distances[2]
    assert distances[2] < 0.06
    tree = toy_search(20000, settings, seed=2)
    rng = random.Random(3)
    counts: dict = {}
    for _ in range(1000):
        y = tuple(tokens(boltzmann_walk(tree.root, lam, rng)))
        counts[y] = counts.get(y, 0) + 1
    assert chi_square_p_value(counts, target) > 1e-3
    # the same test rejects the untilted model distribution: it has the power to tell
    assert chi_square_p_value(counts, prior) < 1e-6


def test_large_lambda_finds_and_prefers_the_reward_maximiser():
    best_y = (3, 3, 1)                        # a response the model rarely writes
    reward = lambda y: 1.0 if y == best_y else 0.2 * y.count(2)  # noqa: E731
    assert toy_prob(best_y) < 0.02
    tree = toy_search(3000, Settings(lam=50.0), seed=0, reward=reward)
    best = best_terminal(tree, 50.0)
    assert tuple(tokens(best)) == best_y and best.reward == 1.0
    assert walk_probabilities(tree.root, 50.0)[best] > 0.95
    # a small lam stays close to the model: the maximiser keeps about its prior probability
    small = toy_search(3000, Settings(lam=0.01), seed=0, reward=reward)
    p_small = {tuple(tokens(n)): p for n, p in walk_probabilities(small.root, 0.01).items()}
    assert p_small.get(best_y, 0.0) < 0.15


# ---------------------------------------------------------------------------
# Metrics


def test_improvement_rates_and_budget_counts():
    assert metrics.improvement_rate([0, 1, 1, 0, 0.5]) == pytest.approx(3 / 4)  # 1>=0, 1>=1, 0.5>=0
    assert metrics.improvement_rate([1.0]) is None
    rewards = [0.0, 1.0, 1.0, 0.5, 0.0]
    shuffled = np.mean([metrics.improvement_rate(list(p))
                        for p in itertools.permutations(rewards)])
    assert metrics.shuffled_improvement_rate(rewards) == pytest.approx(shuffled)
    assert metrics.first_correct([False, False, True, True]) == 3
    assert metrics.first_correct([False]) is None
    assert metrics.count_at_budget([10, 20, 30], 30) == 2      # 10 + 20 reaches 30
    assert metrics.count_at_budget([10, 20, 30], 31) == 3
    assert metrics.count_at_budget([10, 20, 30], 5) == 1
    assert metrics.count_at_budget([10, 20, 30], 999) == 3
    samples = [{"num_tokens": 10, "reward": 0.0, "correct": False, "cluster": 0},
               {"num_tokens": 10, "reward": 1.0, "correct": True, "cluster": 1},
               {"num_tokens": 10, "reward": 0.0, "correct": False, "cluster": 0},
               {"num_tokens": 10, "reward": 0.0, "correct": False, "cluster": None}]
    at = metrics.sampling_at_budget(samples, 15)
    assert at["n"] == 2 and at["best_of_n_correct"] and at["tokens"] == 20
    assert at["pass_at_n"] == pytest.approx(1 - math.comb(3, 2) / math.comb(4, 2))
    assert not at["maj_correct"]                 # a 1-1 tie goes to the cluster seen first
    assert not metrics.sampling_at_budget(samples, 10)["best_of_n_correct"]
    assert not metrics.sampling_at_budget(samples, 40)["maj_correct"]  # 2 votes to 1
    for sample, new in zip(samples, [10, 2, 3, 10]):
        sample["new_tokens"] = new               # counted in distinct tokens: 3 fit in 15
    assert metrics.sampling_at_budget(samples, 15, "new_tokens")["n"] == 3


def test_vote_weights_clusters_and_skips_missing_answers():
    assert metrics.vote([None, 0, 1, 1, 0], [9, 1, 1, 1, 3]) == 1      # cluster 0: 4 > 2
    assert metrics.vote([None, 0, 1, 1, 0], [9, 1, 2, 1, 1]) == 2
    assert metrics.vote([0, 1], [1, 1]) == 0                           # tie: first seen
    assert metrics.vote([None, None], [1, 1]) is None
    leaves = [{"cluster": 0, "correct": False}, {"cluster": 1, "correct": True},
              {"cluster": None, "correct": False}]
    assert metrics.voted_correct(leaves, [1, 2, 5]) and not metrics.voted_correct(leaves, [3, 2, 5])


def test_distinct_tokens_count_each_prefix_once():
    from rl_onoff.search.baseline import distinct_new_tokens

    rng = random.Random(0)
    responses = [[rng.randrange(3) for _ in range(rng.randrange(1, 6))] for _ in range(40)]
    seen, expected = set(), []
    for ids in responses:                        # the prefixes as tuples, counted by a set
        prefixes = {tuple(ids[:i]) for i in range(1, len(ids) + 1)}
        expected.append(len(prefixes - seen))
        seen |= prefixes
    assert distinct_new_tokens(responses) == expected


def test_bootstrap_intervals_agree_with_the_normal_interval_and_pair_differences():
    from rl_onoff.search.intervals import difference, interval
    from rl_onoff.stats import mean_interval

    rng = np.random.default_rng(0)
    values = (rng.random(400) < 0.3).astype(float)
    boot, normal = interval(values), mean_interval(list(values))
    assert boot["mean"] == pytest.approx(normal.mean)
    assert boot["lo"] == pytest.approx(normal.lo, abs=0.008)
    assert boot["hi"] == pytest.approx(normal.hi, abs=0.008)
    # seeds: with identical seeds the seed level adds nothing; a shared question offset cancels
    # in a paired difference (much narrower than either interval)
    hard = rng.random((200, 1))
    same = interval(np.repeat(values[:200, None], 3, axis=1))
    assert same["lo"] == pytest.approx(interval(values[:200])["lo"], abs=0.02)
    a = hard + 0.05 * rng.random((200, 3))
    b = hard + 0.05 * rng.random((200, 3)) - 0.1
    d = difference(a, b)
    assert d["excludes_zero"] and d["mean"] == pytest.approx(float((a - b).mean()))
    assert d["hi"] - d["lo"] < 0.2 * (interval(a)["hi"] - interval(a)["lo"])
    assert not difference(values, values)["excludes_zero"]
    assert interval([[1.0, 0.0]])["lo"] is None  # one question: no interval


def test_oracle_labels_follow_the_reward():
    from rl_onoff.search.rewards import uses_reference

    assert uses_reference("math_verify", {}) and uses_reference("step_check", {"math_verify": 1})
    assert not uses_reference("step_check", {"length": -0.1})
    assert metrics.is_oracle("tree_best", True) and not metrics.is_oracle("tree_best", False)
    assert metrics.is_oracle("blind_any_correct", False)
    assert not metrics.is_oracle("tree_vote", True) and not metrics.is_oracle("sampling_maj", True)


# ---------------------------------------------------------------------------
# The KV-cache policy on a real (random) model


@pytest.fixture(scope="module")
def random_lm(tiny_random_model):
    from rl_onoff.models import load_model

    return load_model(tiny_random_model, "cpu")


def kv_policy(model, tokenizer, seed=0, max_new_tokens=10, **params):
    from rl_onoff.decoding import SamplingParams
    from rl_onoff.search.kv import KVPolicy

    return KVPolicy(model, SamplingParams(**params), [tokenizer.eos_token_id], max_new_tokens,
                    torch.Generator().manual_seed(seed), tokenizer.pad_token_id, samples_ahead=2)


def prompts_for(tokenizer):
    return [tokenizer("Ann has 3 apples. How many?")["input_ids"],
            tokenizer("Ben")["input_ids"], tokenizer("5 + 7 =")["input_ids"]]


def all_nodes(tree):
    stack, out = [tree.root], []
    while stack:
        node = stack.pop()
        out.append(node)
        stack.extend(node.children.values())
    return out


def test_kv_tree_matches_full_forwards_and_counts_every_token(random_lm):
    model, tokenizer = random_lm
    policy = kv_policy(model, tokenizer, temperature=1.0)
    seen = {"slots": 0, "tokens": 0}

    def count(module, args, kwargs):
        seen["slots"] += kwargs["input_ids"].numel()
        mask = kwargs["attention_mask"]
        seen["tokens"] += int(mask[:, -kwargs["input_ids"].shape[1]:].sum())

    hook = model.register_forward_pre_hook(count, with_kwargs=True)
    try:
        prompts = prompts_for(tokenizer)
        trees = policy.new_trees(prompts)
        rng = random.Random(0)
        for k in range(1, 9):
            iterate(trees, policy, lambda pairs: [rng.random() for _ in pairs], Settings(lam=1.0),
                    rng, k)
    finally:
        hook.remove()
    # every real token the model saw is charged to one tree, padding only to forward_slots
    assert policy.forward_slots == seen["slots"]
    assert sum(t.forward_tokens for t in trees) == seen["tokens"]
    for tree, prompt in zip(trees, prompts):
        nodes = all_nodes(tree)
        inner = [n for n in nodes if n.parent is not None and not n.terminal]
        assert tree.forward_tokens == len(prompt) + len(inner) + tree.refills
        assert tree.size == len(nodes) - 1
        # stored keys/values, and the logits a refill computes, equal one forward over each
        # whole response (prompt + tokens), position by position
        checked, branch_points = set(), 0
        for leaf in tree.terminals:
            with torch.inference_mode():
                out = model(input_ids=torch.tensor([prompt + tokens(leaf)]), use_cache=True)
            layers = out.past_key_values.layers
            for node in list(ancestors(leaf.parent))[:-1]:
                at = len(prompt) + node.depth - 1
                segment, offset = node.kv
                assert torch.allclose(segment.keys[0, :, offset], layers[0].keys[0, :, at],
                                      atol=1e-5)
                assert torch.allclose(segment.values[-1, :, offset], layers[-1].values[0, :, at],
                                      atol=1e-5)
                if len(node.children) > 1 and node not in checked:   # branch points
                    checked.add(node)
                    branch_points += 1
                    with torch.inference_mode():
                        logits = policy.next_logits(tree, node)
                    assert torch.allclose(logits, out.logits[0, at], atol=1e-4)
            checked.update(ancestors(leaf.parent))
        assert branch_points >= 1 and checked >= set(inner)


def test_near_greedy_tree_rollouts_equal_plain_greedy_decoding(random_lm):
    """Batched rollouts from left-padded, segment-built caches continue exactly like generate()."""
    from rl_onoff.decoding import SamplingParams
    from rl_onoff.generation import generate

    model, tokenizer = random_lm
    prompts = prompts_for(tokenizer)
    policy = kv_policy(model, tokenizer, temperature=1e-4, max_new_tokens=12)
    trees = policy.new_trees(prompts)
    leaves = policy.rollout([(t, t.root, t.root.ahead.pop()) for t in trees])
    greedy = generate(model, tokenizer, prompts, SamplingParams(temperature=0.0), 12,
                      eos_ids=[tokenizer.eos_token_id])
    assert [tokens(leaf) for leaf in leaves] == [g.token_ids for g in greedy]
    # branch mid-way with a forced token: the continuation reuses two segments of cache
    starts, expected_prompts = [], []
    for tree, leaf, prompt in zip(trees, leaves, prompts):
        node = leaf.parent.parent.parent
        forced = next(t for t in range(3, 500) if t not in node.children)
        starts.append((tree, node, forced))
        expected_prompts.append(prompt + tokens(node) + [forced])
    branched = policy.rollout(starts)
    expected = generate(model, tokenizer, expected_prompts, SamplingParams(temperature=0.0),
                        12, eos_ids=[tokenizer.eos_token_id])
    for leaf, (_, node, _), g in zip(branched, starts, expected):
        continuation = tokens(leaf)[node.depth + 1:]
        assert continuation == g.token_ids[:len(continuation)]


def test_kv_draws_follow_the_sampling_distribution(random_lm):
    """Draws ahead and refills (one forward over the cached prefix) sample p_theta exactly."""
    from rl_onoff.decoding import SamplingParams, sampling_logits

    model, tokenizer = random_lm
    policy = kv_policy(model, tokenizer, temperature=2.0, top_k=6)
    tree = policy.new_trees(prompts_for(tokenizer)[:1])[0]
    node = policy.rollout([(tree, tree.root, tree.root.ahead.pop())])[0]
    while node.depth > 2:
        node = node.parent
    assert node.depth == 2 and not node.terminal
    counts: dict = {}
    for _ in range(3000):
        token = policy.draw(tree, node)
        counts[token] = counts.get(token, 0) + 1
        if token not in node.children:     # register draws as dts does, so refills grow
            tree.add_child(node, token, terminal=True, finish="eos")
        else:
            node.children[token].draws += 1
    assert tree.refills <= 13              # refills double: about log2(3000)
    with torch.inference_mode():
        logits = model(input_ids=torch.tensor([prompts_for(tokenizer)[0] + tokens(node)])).logits
    probs = sampling_logits(logits[0, -1:], SamplingParams(temperature=2.0, top_k=6)).softmax(-1)[0]
    expected = {t: float(p) for t, p in enumerate(probs) if p > 0}
    assert set(counts) <= set(expected)
    assert chi_square_p_value(counts, expected) > 1e-3


# ---------------------------------------------------------------------------
# The stage end to end


def integer_in_last_box(text: str):
    found = re.findall(r"\\boxed\{(-?\d+)\}", text)
    return int(found[-1]) if found else None


def step_share(text: str) -> float:
    """Share of lines `a op b = c` (integers) that are right, by Python's own arithmetic."""
    steps = re.findall(r"^\s*(-?\d+) ([-+*]) (-?\d+) = (-?\d+)\s*$", text, re.MULTILINE)
    ops = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}
    return (sum(ops[op](int(a), int(b)) == int(c) for a, op, b, c in steps) / len(steps)
            if steps else 0.0)


def vote_by_integer(items: list[dict], weights) -> bool:
    """The weighted-majority integer answer (ties: first seen) is the reference's."""
    totals: dict = {}
    for item, w in zip(items, weights):
        answer = integer_in_last_box(item["text"])
        if answer is not None:
            totals[answer] = totals.get(answer, 0) + w
    if not totals:
        return False
    top = max(totals.values())
    winner = next(a for a in totals if totals[a] == top)
    return next(i for i in items if integer_in_last_box(i["text"]) == winner)["correct"]


def test_stage_numbers_match_independent_recomputation(write_config, tmp_path, tiny_random_model):
    from rl_onoff.search.run import run_tree_search

    out = tmp_path / "out"
    path = write_config({"03_tree_search": {
        "models": ["tiny-arith", tiny_random_model],
        "dataset": {"num_examples": 2, "levels": [1, 2]},   # short answers: 32 tokens suffice
        "rollouts": 3, "sampling": {"max_new_tokens": 32}, "batch_size": 2, "seeds": [0, 1],
        "reward": "step_check", "shaping": {"math_verify": 1.0}, "max_pool_factor": 4,
        "bootstrap": 200, "output_dir": str(out)}})
    summary = run_tree_search(load_config(path))
    results = json.loads((out / "results.json").read_text())
    lines = [json.loads(line) for line in (out / "rollouts.jsonl").read_text().splitlines()]
    labels = ["lam=1e-06 C=1 alpha=0.5", "lam=10 C=1 alpha=0.5"]  # the blind twin, the tree
    assert len(lines) == 2 * 2 * 2 * 2 * 3      # models x seeds x trees x questions x rollouts
    assert summary["reward_reads_reference"]    # math_verify shaping: best-by-reward is oracle
    for name, entry in results["models"].items():
        stats = summary["models"][name]
        questions = entry["questions"]
        for q in questions:
            ref = int(q["reference"])
            assert q["greedy"]["correct"] == (integer_in_last_box(q["greedy"]["text"]) == ref)
            for seed, cell in q["seeds"].items():
                assert list(cell["trees"]) == labels
                for label, tree in cell["trees"].items():
                    mine = [line for line in lines if line["model"] == name and
                            line["id"] == q["id"] and line["seed"] == int(seed) and
                            line["setting"] == label]
                    assert [line["rollout"] for line in mine] == [1, 2, 3]
                    for line in mine:
                        assert line["correct"] == (integer_in_last_box(line["text"]) == ref)
                        assert line["reward"] == pytest.approx(step_share(line["text"]) +
                                                               line["correct"])
                    assert tree["budget_tokens"] == sum(line["new_tokens"] for line in mine)
                    assert tree["best"]["reward"] == max(line["reward"] for line in mine)
                    assert tree["forward_tokens"] == (tree["prompt_tokens"] + tree["nodes"] -
                                                      len(tree["responses"]) + tree["refills"])
                # both sampling controls at the lam=10 tree's budget, recounted
                tree, samples = cell["trees"][labels[1]], cell["samples"]
                seen, distinct = set(), []
                for sample in samples:
                    ids = sample["token_ids"]
                    prefixes = {tuple(ids[:i]) for i in range(1, len(ids) + 1)}
                    distinct.append(len(prefixes - seen))
                    seen |= prefixes
                assert [s["new_tokens"] for s in samples] == distinct
                assert sum(distinct) >= tree["budget_tokens"] or len(samples) == 3 * 4
                for count in ("num_tokens", "new_tokens"):
                    used = np.cumsum([s[count] for s in samples])
                    n = min(int(np.searchsorted(used, tree["budget_tokens"]) + 1), len(samples))
                    at = metrics.sampling_at_budget(samples, tree["budget_tokens"], count)
                    assert at["n"] == n
                    assert at["maj_correct"] == vote_by_integer(samples[:n], [1] * n)
        # the summary's means and paired differences from the per-question records
        seeds = ["0", "1"]
        for label in labels:
            acc = stats["settings"][label]["accuracy"]
            trees = [[q["seeds"][s]["trees"][label] for s in seeds] for q in questions]
            blind = [[q["seeds"][s]["trees"][labels[0]] for s in seeds] for q in questions]
            best = np.mean([[t["best"]["correct"] for t in row] for row in trees])
            vote = np.array([[vote_by_integer(t["responses"], [r["visits"] for r in t["responses"]])
                              for t in row] for row in trees], dtype=float)
            blind_vote = np.array([[vote_by_integer(t["responses"],
                                                    [r["visits"] for r in t["responses"]])
                                    for t in row] for row in blind], dtype=float)
            assert acc["tree_best"]["mean"] == pytest.approx(best) and acc["tree_best"]["oracle"]
            assert acc["tree_vote"]["mean"] == pytest.approx(vote.mean())
            assert not acc["tree_vote"]["oracle"] and acc["tree_any_correct"]["oracle"]
            assert acc["tree_vote"]["lo"] <= acc["tree_vote"]["mean"] <= acc["tree_vote"]["hi"]
            diff = stats["settings"][label]["differences"]["tree_vote - blind_vote"]
            assert diff["mean"] == pytest.approx((vote - blind_vote).mean())
            rollouts = [r for row in trees for t in row for r in t["rollouts"]]
            assert stats["settings"][label]["empty_rollout_share"] == pytest.approx(
                np.mean([r["new_tokens"] == 0 for r in rollouts]))
        assert stats["greedy"]["mean"] == pytest.approx(np.mean([q["greedy"]["correct"]
                                                                 for q in questions]))
    assert (out / "accuracy_vs_lambda.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    run_dir = Path(json.loads((out / "run_config.json").read_text())["run_dir"])
    assert json.loads((run_dir / "run.json").read_text())["status"] == "finished"
    # one run per seed, merged, gives the two-seed run's summary
    from rl_onoff.search.merge import merge

    parts = []
    for seed in ("0", "1"):
        part = tmp_path / f"seed{seed}"
        part.mkdir()
        single = json.loads(json.dumps(results))
        for entry in single["models"].values():
            for q in entry["questions"]:
                q["seeds"] = {seed: q["seeds"][seed]}
        (part / "results.json").write_text(json.dumps(single))
        (part / "summary.json").write_text(json.dumps({**summary, "seeds": [int(seed)]}))
        (part / "rollouts.jsonl").write_text("".join(
            json.dumps(line) + "\n" for line in lines if line["seed"] == int(seed)))
        parts.append(part)
    merged = merge(tmp_path / "merged", parts, resamples=200)
    assert merged["models"] == json.loads(json.dumps(summary["models"]))
    assert len((tmp_path / "merged" / "rollouts.jsonl").read_text().splitlines()) == len(lines)
    with pytest.raises(StageError, match="also in an earlier run"):
        merge(tmp_path / "again", [parts[0], parts[0]], resamples=200)


def test_config_errors_name_the_key_and_the_fix(write_config):
    bad = write_config({"03_tree_search": {"shaping": {"lenght": -0.1}}})
    with pytest.raises(ConfigError, match=r"03_tree_search\.shaping\.lenght.*'length'"):
        load_config(bad)
    with pytest.raises(ConfigError, match=r"03_tree_search\.sampling\.temperature.*> 0"):
        load_config(write_config({"03_tree_search": {"sampling": {"temperature": 0}}}))
    with pytest.raises(ConfigError, match=r"03_tree_search\.selection.*boltzmann, uct"):
        load_config(write_config({"03_tree_search": {"selection": "greedy"}}))
    with pytest.raises(ConfigError, match=r"03_tree_search\.reward.*'step_check'"):
        load_config(write_config({"03_tree_search": {"reward": "step_chek"}}))
    with pytest.raises(ConfigError, match=r"03_tree_search\.lambdas: got -1.*> 0"):
        load_config(write_config({"03_tree_search": {"lambdas": [1, -1]}}))
    with pytest.raises(ConfigError, match=r"03_tree_search\.seeds.*each value listed once"):
        load_config(write_config({"03_tree_search": {"seeds": [0, 0]}}))
    with pytest.raises(ConfigError, match=r"03_tree_search\.widen_alpha: got 2"):
        load_config(write_config({"03_tree_search": {"widen_alpha": [0.5, 2]}}))
