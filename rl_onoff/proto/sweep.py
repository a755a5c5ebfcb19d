"""Capacity sweep: the longest prefix of each text that two vectors reconstruct.

Prefix lengths grow on a sqrt(2) grid (start, start*1.41, start*2, ...), ending
at the text's full length. Each level starts from the vectors that solved the
previous one (warm start) with a fresh optimiser. A prefix counts as
reconstructed when the clean evaluation reaches `evaluate.SUCCESS`; a text
stops at its first failure, so its capacity is the last prefix it passed
(0 when even the shortest failed).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from rl_onoff.proto.evaluate import SUCCESS, evaluate
from rl_onoff.proto.optimize import Result, Settings, optimise


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


def capacity_sweep(model, tokenizer, targets: list[list[int]], e0: torch.Tensor,
                   m0: torch.Tensor | None, settings: Settings, start: int, log=None,
                   log_every: int = 10, bar=None) -> tuple[Result, list[int], list[list[dict]]]:
    """(result holding each text's vectors for its longest solved prefix (or its first try),
    the prefix length those vectors are for, per text the list of levels tried; the last
    one, when it failed, carries its clean evaluation token by token)."""
    levels = [levels_for(len(t), start) for t in targets]
    e, m = e0.clone(), None if m0 is None else m0.clone()
    kept_e, kept_m = e.clone(), None if m is None else m.clone()
    kept_len = [lv[0] for lv in levels]
    tried: list[list[dict]] = [[] for _ in targets]
    alive = list(range(len(targets)))
    parts, level = [], 0
    while alive:
        prefixes = [targets[r][:levels[r][level]] for r in alive]
        result = optimise(model, prefixes, e[alive], None if m is None else m[alive], settings,
                          log=log, log_every=log_every, bar=bar)
        scores = evaluate(model, tokenizer, prefixes, result.e, result.m, settings.method,
                          settings.arrangement)
        e[alive] = result.e
        if m is not None:
            m[alive] = result.m
        parts.append((alive, result))
        still = []
        for i, r in enumerate(alive):
            score = scores[i]
            tried[r].append({"level": level, "length": score["length"],
                             "accuracy": score["accuracy"],
                             "training_accuracy": float(result.best_accuracy[i]),
                             "steps": int(result.steps_run[i]),
                             # where the text broke: the clean pass of its first failed level
                             **({"evaluation": score} if score["accuracy"] < SUCCESS else {})})
            if score["accuracy"] >= SUCCESS or level == 0:
                kept_e[r] = result.e[i]
                if m is not None:
                    kept_m[r] = result.m[i]
                kept_len[r] = score["length"]
            if score["accuracy"] >= SUCCESS and level + 1 < len(levels[r]):
                still.append(r)
        alive, level = still, level + 1
    if bar is not None:  # the bar counted `steps` for every level of the longest text
        bar.total -= settings.steps * (max(len(lv) for lv in levels) - level)
        bar.refresh()
    return _joined(parts, len(targets), kept_e, kept_m), kept_len, tried


def _joined(parts: list, rows: int, e: torch.Tensor, m: torch.Tensor | None) -> Result:
    """One Result over all levels: curves end to end (NaN where a text was not in a level)."""
    curves, lrs, steps_run = {}, [], np.zeros(rows, dtype=np.int64)
    for alive, result in parts:
        used = len(result.lr)
        for name, values in result.curves.items():
            block = np.full((used, rows), np.nan)
            block[:, alive] = values
            curves.setdefault(name, []).append(block)
        lrs.append(result.lr)
        steps_run[alive] += result.steps_run
    best = np.full(rows, np.nan)   # training accuracy of each kept prefix is in `tried`
    return Result(e=e, m=m, best_accuracy=best, best_step=np.full(rows, -1), steps_run=steps_run,
                  curves={k: np.concatenate(v) for k, v in curves.items()},
                  lr=np.concatenate(lrs), grad_norm_shared_m=None)
