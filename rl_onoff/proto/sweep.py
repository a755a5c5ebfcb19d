"""Capacity: the longest prefix of each text that two vectors reconstruct, per restart.

Every (text, restart) searches on its own, each attempt from a fresh random start
(keyed by text, length and restart; no warm start, so restarts are independent).
Lengths grow on a sqrt(2) grid (start, start*1.41, start*2, ..., the whole text)
until the first failure, then bisection between the longest length solved and
the shortest failed narrows the gap to one token. A prefix counts as solved when
the clean evaluation reaches `evaluate.SUCCESS`. The capacity of a (text,
restart) is its longest solved length (0 when even length 1 failed); bisection
assumes that solvability falls with length, which one fresh start per length
need not obey, so the reported numbers are what the search found, with every
attempt kept in `attempts`. All pending (text, restart) attempts of a round are
optimised together in batches (a text's trajectory does not depend on its
batch-mates; see optimize).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from rl_onoff.proto.evaluate import SUCCESS, evaluate
from rl_onoff.proto.optimize import Settings, initial_vectors, optimise


def sqrt2_grid(start: int, longest: int) -> list[int]:
    """start * sqrt(2)^k, rounded and without repeats, below `longest`; then `longest`."""
    grid, k = [], 0
    while (length := round(start * math.sqrt(2) ** k)) < longest:
        if not grid or length != grid[-1]:
            grid.append(length)
        k += 1
    return grid + [longest]


def levels_for(length: int, start: int) -> list[int]:
    return sqrt2_grid(min(start, length), length)


@dataclass
class Search:
    """One (text, restart)'s search: the grid walk, then bisection."""
    grid: list[int]
    solved: int = 0                   # longest length solved so far
    failed: int | None = None         # shortest length failed so far
    attempts: list[dict] = field(default_factory=list)
    kept: dict | None = None          # vectors and clean score of the longest solved (or first)

    def next_length(self) -> int | None:
        if self.failed is None:
            later = [n for n in self.grid if n > self.solved]
            return later[0] if later else None
        return None if self.failed - self.solved <= 1 else (self.solved + self.failed) // 2

    def record(self, length: int, score: dict, attempt: dict, vectors: dict) -> None:
        ok = score["accuracy"] >= SUCCESS
        self.attempts.append({"length": length, "accuracy": score["accuracy"],
                              "phase": "grid" if self.failed is None else "bisection", **attempt,
                              **({} if ok else {"evaluation": score})})
        if ok:
            self.solved = length
        else:
            self.failed = length
        if ok or self.kept is None:
            self.kept = {**vectors, "score": score, **attempt}


def capacity_search(model, tokenizer, targets: list[list[int]], settings: Settings, seed: int,
                    restarts: int, start: int, batch_size: int, log=None, log_every: int = 10,
                    bar=None, keys: list | None = None) -> tuple[list[list[Search]], list]:
    """(searches[restart][text], rounds as [(rows [(text, restart)], Result)] for the curves).
    `keys[t]` names text t in the random starts (default: t), so a text's search is the same
    whichever other texts are searched beside it (as when texts are split over processes)."""
    keys = list(range(len(targets))) if keys is None else keys
    searches = [[Search(levels_for(len(t), start)) for t in targets] for _ in range(restarts)]
    rounds = []
    while True:
        pending = [(t, r, n) for r in range(restarts) for t in range(len(targets))
                   if (n := searches[r][t].next_length()) is not None]
        if not pending:
            return searches, rounds
        for first in range(0, len(pending), batch_size):
            batch = pending[first:first + batch_size]
            prefixes = [targets[t][:n] for t, _, n in batch]
            starts = [initial_vectors(model, settings, [(keys[t], n)], seed, r)
                      for t, r, n in batch]
            e0 = torch.cat([e for e, _ in starts])
            m0 = None if starts[0][1] is None else torch.cat([m for _, m in starts])
            if bar is not None:
                bar.total += settings.steps
                bar.refresh()
            result = optimise(model, prefixes, e0, m0, settings, log=log, log_every=log_every,
                              bar=bar)
            scores = evaluate(model, tokenizer, prefixes, result.e, result.m, settings.method,
                              settings.arrangement, batch_size, settings.bos)
            for i, ((t, r, n), score) in enumerate(zip(batch, scores)):
                attempt = {"steps": int(result.steps_run[i]), "best_step": int(result.best_step[i]),
                           "stopped": result.stopped[i],
                           "training_accuracy": float(result.best_accuracy[i])}
                vectors = {"e": result.e[i], "m": None if result.m is None else result.m[i]}
                searches[r][t].record(n, score, attempt, vectors)
            rounds.append(([(t, r) for t, r, _ in batch], result))
