"""Analyses of learned vectors (Mezentsev & Oseledets 2025): how alike the solutions are.

    cosine_summary   pairwise cosine similarity of vectors across texts, by kind
    interpolation    clean accuracy along the straight line between two restarts' vectors
                     for the same text (a dip means separate solutions, no common basin)
"""

from __future__ import annotations

import numpy as np
import torch


def cosine_matrix(vectors: list[torch.Tensor]) -> np.ndarray:
    stacked = torch.stack([v.float() for v in vectors])
    unit = stacked / stacked.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return (unit @ unit.T).numpy()


def cosine_summary(vectors: list[torch.Tensor], kinds: list[str]) -> dict:
    """Mean, min and max cosine over distinct pairs, within each kind of text."""
    out = {}
    for kind in sorted(set(kinds)):
        chosen = [v for v, k in zip(vectors, kinds) if k == kind]
        if len(chosen) < 2:
            continue
        sims = cosine_matrix(chosen)[np.triu_indices(len(chosen), 1)]
        out[kind] = {"pairs": len(sims), "mean": float(sims.mean()),
                     "min": float(sims.min()), "max": float(sims.max())}
    return out


def interpolation(model, tokenizer, targets: list[list[int]], tries: list[list[dict]], cfg,
                  bos: int | None) -> dict:
    """Restarts 0 and 1 of each text, where both hold vectors for the same length: the clean
    accuracy at (1 - a) * first + a * second for `cfg.interpolation_points` values of a in
    [0, 1], and the cosine between the two solutions' e (and m)."""
    from rl_onoff.proto.evaluate import evaluate

    alphas = np.linspace(0.0, 1.0, cfg.interpolation_points)
    rows = [t for t in range(len(targets))
            if tries[0][t]["score"]["length"] == tries[1][t]["score"]["length"]]
    if not rows:
        return {"alphas": alphas.tolist(), "texts": []}
    first, second = [tries[0][t] for t in rows], [tries[1][t] for t in rows]
    prefixes = [targets[t][:first[i]["score"]["length"]] for i, t in enumerate(rows)]

    def line(key: str, a: float):
        if first[0][key] is None:
            return None
        return torch.stack([(1 - a) * x[key] + a * y[key] for x, y in zip(first, second)])

    accuracy = np.array([[s["accuracy"] for s in evaluate(
        model, tokenizer, prefixes, line("e", a), line("m", a), cfg.method, cfg.arrangement,
        cfg.batch_size, bos)] for a in alphas])               # alphas x texts
    cos = lambda key: [float(torch.nn.functional.cosine_similarity(x[key], y[key], dim=0))
                       for x, y in zip(first, second)] if first[0][key] is not None else None
    return {"alphas": alphas.tolist(), "texts": rows, "accuracy": accuracy.T.tolist(),
            "min_along_line": accuracy.min(0).tolist(),
            "ends": [[float(accuracy[0, i]), float(accuracy[-1, i])] for i in range(len(rows))],
            "cosine_e": cos("e"), "cosine_m": cos("m")}


def shared_m_transfer(model, tokenizer, targets: list[list[int]], m: torch.Tensor, settings,
                      seed: int, batch_size: int) -> dict:
    """Does a shared m learned on some texts carry over to new ones? Each new text gets only
    its own e against the fixed `m` (1 x d), beside a control run that learns its own e and m
    from the same start; clean accuracy of both."""
    import dataclasses

    from rl_onoff.proto.evaluate import evaluate
    from rl_onoff.proto.optimize import initial_vectors, optimise

    own = dataclasses.replace(settings, share_m=False)
    keys = [("transfer", i) for i in range(len(targets))]
    e0, m0 = initial_vectors(model, own, keys, seed, 0)
    fixed = m.expand(len(targets), -1).clone()
    out = {"texts": [tokenizer.decode(t) for t in targets]}
    for name, m_start, train_m in (("shared_m", fixed, False), ("own_m", m0, True)):
        result = optimise(model, targets, e0, m_start, own, train_m=train_m)
        scores = evaluate(model, tokenizer, targets, result.e, result.m, own.method,
                          own.arrangement, batch_size, own.bos)
        out[f"accuracy_{name}"] = [s["accuracy"] for s in scores]
        out[f"steps_{name}"] = result.steps_run.tolist()
    return out
