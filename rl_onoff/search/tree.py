"""The search tree and its maximum-entropy backup: pure Python, no model.

Every node is a response prefix, one token longer than its parent's. A node
keeps a visit count N and a soft value v-hat; terminal nodes (EOS or the token
limit) keep the reward of the response they end.

Discrete tokens repeat: two draws from p_theta at the same prefix can give the
same token, and then they share one child (the tree is a trie). The soft
value of a node is the log-mean-exp over its *draws*, not over distinct
children: a child drawn d times counts d times,

    v(node) = (1/lam) * log( sum_c d_c * exp(lam * v(c)) / sum_c d_c ),

over the visited children c. Without repeats (every d_c = 1) this is the plain
"mean over visited children" of Diffusion Tree Sampling; with repeats it keeps
the estimate of (1/lam) log E_p[exp(lam v)] unbiased in the draws, which is
what makes the Boltzmann walk (child chosen with weight d_c * exp(lam * v(c)))
target p_theta(y) * exp(lam * r(y)). Selection steps do not count as draws:
they are chosen by value, not sampled from p_theta.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any


@dataclass(eq=False, slots=True)
class Node:
    token: int | None                     # None at the root (the prompt)
    parent: "Node | None"
    depth: int                            # response tokens up to and including this one
    terminal: bool = False
    finish: str | None = None             # terminal nodes: "eos" or "length"
    children: dict = field(default_factory=dict)   # token -> Node
    draws: int = 0                        # times a draw from p_theta at the parent gave this token
    visits: int = 0                       # N
    value: float = 0.0                    # v-hat, meaningful once visits > 0
    reward: float | None = None           # r(y) of a terminal node, once scored
    found_at: int | None = None           # terminal nodes: the rollout (1-based) that reached it first
    kv: Any = None                        # the policy's handle to this prefix's cached keys/values
    ahead: list = field(default_factory=list)  # tokens drawn ahead from p_theta(. | this prefix)


class Tree:
    """A root (the prompt) and the counters a search reports."""

    def __init__(self, prompt_len: int = 0):
        self.root = Node(token=None, parent=None, depth=0)
        self.prompt_len = prompt_len
        self.size = 0                 # non-root nodes: distinct response prefixes, one token each
        self.terminals: list[Node] = []
        self.forward_tokens = 0       # tokens this tree ran through the model (prompt included)
        self.refills = 0              # forwards spent redrawing at an existing node

    def add_child(self, parent: Node, token: int, terminal: bool = False,
                  finish: str | None = None) -> Node:
        """A new child created by one draw from p_theta at `parent`."""
        if token in parent.children:
            raise ValueError(f"token {token} is already a child; merge into it instead")
        if parent.terminal:
            raise ValueError("a terminal node has no continuation")
        child = Node(token=token, parent=parent, depth=parent.depth + 1, terminal=terminal,
                     finish=finish, draws=1)
        parent.children[token] = child
        self.size += 1
        if terminal:
            self.terminals.append(child)
        return child


def tokens(node: Node) -> list[int]:
    """The response tokens from the root to `node`."""
    out = []
    while node.parent is not None:
        out.append(node.token)
        node = node.parent
    return out[::-1]


def ancestors(node: Node):
    """`node`, its parent, ..., the root."""
    while node is not None:
        yield node
        node = node.parent


def _log_weighted_mean_exp(pairs, lam: float) -> float:
    """(1/lam) log( sum w e^{lam v} / sum w ) for (w, v) pairs, computed stably."""
    top = max(v for _, v in pairs)
    total = sum(w for w, _ in pairs)
    acc = sum(w * math.exp(lam * (v - top)) for w, v in pairs)
    return top + math.log(acc / total) / lam


def soft_value(node: Node, lam: float) -> float:
    """The node's soft value from its visited children, weighted by their draws."""
    pairs = [(c.draws, c.value) for c in node.children.values() if c.visits > 0]
    if not pairs:
        raise ValueError("soft_value needs at least one visited child")
    return _log_weighted_mean_exp(pairs, lam)


def backup(leaf: Node, lam: float) -> None:
    """After a rollout ended at `leaf` (scored): leaf v = r; ancestors' v from their children."""
    if leaf.reward is None:
        raise ValueError("backup needs a scored terminal node")
    leaf.visits += 1
    leaf.value = leaf.reward
    for node in ancestors(leaf.parent):
        node.visits += 1
        node.value = soft_value(node, lam)


def draws_at(node: Node) -> int:
    """How many draws from p_theta were made at `node` (its children counted with multiplicity)."""
    return sum(c.draws for c in node.children.values())


def is_full(node: Node, widen_c: float, widen_alpha: float) -> bool:
    """Progressive widening: a node is not expanded on this visit when its draws already reach
    C * (N + 1)^alpha, the allowance of the visit about to happen (N visits so far).

    Counting the coming visit matters: with N = 1 and C * 1^alpha = 1 a node created by one
    rollout would be full with its single draw, so rollout 2 would walk rollout 1's path to its
    end and add nothing. Children count with multiplicity (draws), as in continuous DTS where
    every draw is a child; counting distinct tokens would leave a node with one likely token
    never full, and the search would reduce to plain sampling from there."""
    return bool(node.children) and draws_at(node) >= widen_c * (node.visits + 1) ** widen_alpha


def choice_probabilities(node: Node, lam: float) -> list[tuple[Node, float]]:
    """The Boltzmann walk's step from `node`: child c with probability ∝ d_c exp(lam v(c))."""
    visited = [c for c in node.children.values() if c.visits > 0]
    if not visited:
        raise ValueError("no visited child to step to")
    top = max(c.value for c in visited)
    weights = [c.draws * math.exp(lam * (c.value - top)) for c in visited]
    total = sum(weights)
    return [(c, w / total) for c, w in zip(visited, weights)]


def boltzmann_child(node: Node, lam: float, rng: random.Random) -> Node:
    children, probs = zip(*choice_probabilities(node, lam))
    return rng.choices(children, weights=probs)[0]


def uct_child(node: Node, uct_c: float) -> Node:
    """The argmax variant: highest v + c * sqrt(ln N / N_child) (unvisited children first)."""
    log_n = math.log(max(node.visits, 1))
    return max(node.children.values(),
               key=lambda c: math.inf if c.visits == 0 else
               c.value + uct_c * math.sqrt(log_n / c.visits))


def boltzmann_walk(root: Node, lam: float, rng: random.Random) -> Node:
    """A response sampled from the tree: Boltzmann steps from the root to a terminal node."""
    node = root
    while not node.terminal:
        node = boltzmann_child(node, lam, rng)
    return node


def walk_probabilities(root: Node, lam: float) -> dict[Node, float]:
    """The exact probability that `boltzmann_walk` ends at each terminal node."""
    out: dict[Node, float] = {}
    stack = [(root, 1.0)]
    while stack:
        node, prob = stack.pop()
        if node.terminal:
            out[node] = out.get(node, 0.0) + prob
            continue
        for child, step in choice_probabilities(node, lam):
            stack.append((child, prob * step))
    return out


def best_terminal(tree: Tree, lam: float) -> Node:
    """The scored response with the highest reward; ties go to the one the walk favours most
    (its walk probability, a product of the v-hat based step probabilities)."""
    scored = [t for t in tree.terminals if t.reward is not None]
    if not scored:
        raise ValueError("no scored response in the tree yet")
    probs = walk_probabilities(tree.root, lam)
    return max(scored, key=lambda t: (t.reward, probs.get(t, 0.0)))
