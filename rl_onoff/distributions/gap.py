"""The sampler-vs-trainer gap: 00's log-probs of its own tokens against 01's recomputation.

00 stores per sample `sampler_logprobs`: the log-probability of each drawn token
under the distribution it was drawn from (after temperature, top-k, top-p,
min-p), as the sampling engine computed it. 01 recomputes the same token's
log-probability under the same transform with a teacher-forced pass (the
"trainer" view) and stores per token

    delta = log pi_sampler - log pi_trainer

With r = pi_trainer / pi_sampler = exp(-delta), the run summary gives the mean
and largest |delta|, kl_k3 = mean(r - 1 - log r) (an estimate of
KL(sampler || trainer) from the sampler's own tokens), the share of tokens whose
ratio leaves [0.5, 2], and the per-sequence importance ratio prod(r) (quantiles
over sequences). A token the trainer's filters drop (log pi_trainer = -inf, so
r = 0) has delta = +inf: it is counted apart (`num_excluded_by_trainer`), counts
as outside [0.5, 2], gives its sequence a ratio of 0, and is left out of the
means, which are over the tokens the trainer keeps.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rl_onoff import io

RATIO_BAND = (0.5, 2.0)
QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
HISTOGRAM_BINS = 60


def sampler_logprobs(results: dict, index: list[tuple[int, int]], source) -> np.ndarray | None:
    """00's `sampler_logprobs` of the samples `index` ((question, sample) pairs), flat in that
    order (float64); None when 00 stored none (or only for some samples: then a note says
    so). A list that does not match its tokens, or holds a non-finite value, is an error."""
    samples = [results["questions"][q]["samples"][s] for q, s in index]
    present = [sample.get("sampler_logprobs") is not None for sample in samples]
    if not any(present):
        return None
    if not all(present):
        print(f"01-dist: {present.count(False)} of {len(samples)} samples in {source} have no "
              "sampler_logprobs (sampled by an older 00?); no sampler-vs-trainer gap this run")
        return None
    for (q, s), sample in zip(index, samples):
        values = sample["sampler_logprobs"]
        if len(values) != len(sample["token_ids"]):
            raise ValueError(f"{source}: question {q} sample {s} has {len(values)} "
                             f"sampler_logprobs for {len(sample['token_ids'])} tokens; "
                             "rerun exp/00-sample.py")
        if not np.isfinite(np.asarray(values, dtype=float)).all():
            raise ValueError(f"{source}: question {q} sample {s} has a non-finite sampler "
                             "log-prob (a drawn token cannot have probability 0); rerun "
                             "exp/00-sample.py")
    return np.concatenate([np.asarray(sample["sampler_logprobs"], dtype=np.float64)
                           for sample in samples])


def deltas(sampler: np.ndarray, trainer: np.ndarray) -> np.ndarray:
    """log pi_sampler - log pi_trainer per token (float32); +inf where the trainer drops the
    token (its log-prob is -inf; the sampler's are finite, see sampler_logprobs)."""
    return (np.asarray(sampler, np.float64) - np.asarray(trainer, np.float64)).astype(np.float32)


def summarize(delta: np.ndarray, lengths: np.ndarray) -> dict:
    """The run's gap summary (see the module docstring) from the flat per-token deltas and the
    samples' lengths."""
    delta = np.asarray(delta, np.float64)
    lengths = np.asarray(lengths)
    kept = np.isfinite(delta)
    log_r = -delta[kept]
    low, high = np.log(RATIO_BAND)
    outside = int((~kept).sum() + ((log_r < low) | (log_r > high)).sum())
    sequence = np.repeat(np.arange(len(lengths)), lengths)
    excluded = np.bincount(sequence, ~kept, minlength=len(lengths)) > 0
    log_ratio = np.bincount(sequence, np.where(kept, -delta, 0.0), minlength=len(lengths))
    ratio = np.where(excluded, 0.0, np.exp(log_ratio))
    largest = float(np.abs(log_r).max()) if len(log_r) else None
    edges = np.linspace(-1, 1, HISTOGRAM_BINS + 1) * max(largest or 0.0, 1e-6)
    return {
        "num_tokens": int(len(delta)),
        "num_excluded_by_trainer": int((~kept).sum()),
        "mean_delta": _mean(-log_r),
        "mean_abs_delta": _mean(np.abs(log_r)),
        "max_abs_delta": largest,
        "kl_k3": _mean(np.exp(log_r) - 1 - log_r),
        "frac_ratio_outside_0.5_2": outside / len(delta) if len(delta) else None,
        "per_sequence": {
            "num_sequences": int(len(lengths)),
            "num_with_excluded_token": int(excluded.sum()),
            "importance_ratio_mean": _mean(ratio),
            "importance_ratio_quantiles": _quantiles(ratio),
            "log_importance_ratio_quantiles": _quantiles(log_ratio[~excluded]),
        },
        "histogram": {"edges": edges.tolist(), "counts": np.histogram(-log_r, edges)[0].tolist()},
    }


def _mean(values: np.ndarray) -> float | None:
    return float(values.mean()) if len(values) else None


def _quantiles(values: np.ndarray) -> dict[str, float] | None:
    """Quantiles that are values of the sample (inverted CDF): the quantiles of exp(x) are
    exp of those of x."""
    if not len(values):
        return None
    return {str(q): float(v) for q, v in zip(QUANTILES, np.quantile(values, QUANTILES,
                                                                     method="inverted_cdf"))}


def plot(gap: dict, path: Path, title: str) -> Path:
    """The histogram of delta over the tokens the trainer keeps, as a PNG at `path`."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 4.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    hist = gap["histogram"]
    edges = hist["edges"]
    ax.stairs(hist["counts"], edges, linewidth=1.5)  # lines: a filled step has no log baseline
    band = [-np.log(bound) for bound in RATIO_BAND if edges[0] <= -np.log(bound) <= edges[-1]]
    for x in band:
        ax.axvline(x, color="grey", linestyle=":", linewidth=1)
    ax.set_xlim(edges[0], edges[-1])
    ax.set(yscale="log", ylabel="tokens",
           xlabel="delta = log pi_sampler - log pi_trainer (nats)"
                  + ("; dotted: ratio 0.5 and 2" if band else "; all within ratio 0.5-2"),
           title="Sampler vs trainer log-probs of the sampled tokens\n"
                 + headline(gap).replace("; ", "\n")
                 + " (not shown)")
    ax.title.set_fontsize(8)
    fig.suptitle(title, fontsize=9)
    io.save_figure(path, fig)
    return path


def headline(gap: dict) -> str:
    """The summary in one line."""
    return (f"mean delta {_fmt(gap['mean_delta'])}, mean |delta| {_fmt(gap['mean_abs_delta'])}, "
            f"max |delta| {_fmt(gap['max_abs_delta'])}, k3 KL {_fmt(gap['kl_k3'])}; "
            f"{gap['num_excluded_by_trainer']} of {gap['num_tokens']} tokens dropped by the "
            "trainer's filters")


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.3g}"
