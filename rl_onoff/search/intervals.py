"""95% percentile-bootstrap intervals over questions and seeds, for 03's accuracies.

A metric is a (questions, seeds) array of per-question values (0/1 or an expected
correctness). One resample draws questions with replacement and then, for each drawn
question, seeds with replacement (a two-level bootstrap: both the choice of questions and
the randomness of a search vary); its statistic is the mean of the drawn cells. A difference
between two methods is bootstrapped on the paired per-cell differences (the same questions
and seeds for both), so the shared difficulty of a question cancels. The resampling seed is
fixed: the same data always gives the same interval.
"""

from __future__ import annotations

import numpy as np

BOOTSTRAP_SEED = 20260101
METHOD = ("percentile bootstrap, 95%: questions resampled with replacement, then seeds within "
          "each drawn question; differences paired per question and seed")


def _draws(shape: tuple[int, int], resamples: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    questions, seeds = shape
    q = rng.integers(0, questions, size=(resamples, questions))
    s = rng.integers(0, seeds, size=(resamples, questions, seeds))
    return q, s


def interval(values, resamples: int = 2000) -> dict:
    """{"mean", "lo", "hi", "questions", "seeds"} of a (questions, seeds) array; lo/hi are None
    with a single question."""
    arr = np.asarray(values, dtype=float)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2 or arr.size == 0:
        raise ValueError(f"interval needs a non-empty (questions, seeds) array; got {arr.shape}")
    out = {"mean": float(arr.mean()), "lo": None, "hi": None,
           "questions": arr.shape[0], "seeds": arr.shape[1]}
    if arr.shape[0] < 2:
        return out
    q, s = _draws(arr.shape, resamples)
    means = arr[q[:, :, None], s].mean(axis=(1, 2))
    out["lo"], out["hi"] = (float(v) for v in np.percentile(means, [2.5, 97.5]))
    return out


def difference(a, b, resamples: int = 2000) -> dict:
    """The interval of mean(a - b), paired per (question, seed); `excludes_zero` says whether
    the 95% interval leaves 0 out (a difference worth stating)."""
    out = interval(np.asarray(a, dtype=float) - np.asarray(b, dtype=float), resamples)
    out["excludes_zero"] = out["lo"] is not None and (out["lo"] > 0 or out["hi"] < 0)
    return out


def fmt(entry: dict) -> str:
    """`0.290 [0.201, 0.380]` for the terminal and the README."""
    if entry["lo"] is None:
        return f"{entry['mean']:.3f}"
    return f"{entry['mean']:.3f} [{entry['lo']:.3f}, {entry['hi']:.3f}]"
