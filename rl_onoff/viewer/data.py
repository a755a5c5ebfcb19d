"""What the viewer reads from 01's output, with no Streamlit in it (the page caches these).

Opening a run reads distributions.json and the NPZ's headers, nothing more; a
sample's arrays are read when it is shown. Every way an output can be missing
or broken becomes a `ViewerError` whose message says what to do.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np
import pandas as pd

from rl_onoff.distributions.pipeline import FORMAT_VERSION
from rl_onoff.distributions.store import JSON_NAME, NPZ_NAME, Distributions, load_distributions
from rl_onoff.viewer.text import fixed

OUTCOMES = ("correct", "incorrect", "truncated")
SORT_KEYS = {"question order": "question", "mean entropy": "mean_entropy",
             "accuracy": "accuracy", "mean length": "mean_length"}


class View(NamedTuple):
    """A way to colour tokens: by `values(array)`, on the scale of view `scale` (a quantile of
    the run), or on GLTR's rank bins when `scale` is None."""
    array: str
    values: Callable[[np.ndarray], np.ndarray]
    label: str
    scale: str | None
    unit: str


# Both entropies share one scale, so switching between them compares like with like;
# surprisal is -log p, so that for every view "high" means "unusual". The sampler gap is
# there when 00 stored its sampler's log-probs (01's array `sampler_delta` = log pi_sampler -
# log pi_trainer of the drawn token): near 0 for the hf backend, the off-policy gap for vLLM.
VIEWS = {"entropy": View("entropy", np.asarray, "entropy, full distribution (T=1)", "entropy",
                         "nats"),
         "sampled entropy": View("sampled_entropy", np.asarray,
                                 "entropy, distribution 00 sampled from", "entropy", "nats"),
         "surprisal": View("logprob", np.negative, "surprisal −log p of the sampled token (T=1)",
                           "surprisal", "nats"),
         "rank": View("rank", np.asarray, "rank of the sampled token (0: most likely, T=1)",
                      None, "rank"),
         "sampler gap": View("sampler_delta", np.abs,
                             "|log π_sampler − log π_trainer| of the sampled token",
                             "sampler gap", "nats")}
RANK_EDGES = (0, 1, 10, 100, 1000)  # GLTR's top-10/100/1000, with the most likely token apart
QUANTILE_SAMPLE = 1 << 20   # a scale's quantile is taken over at most this many tokens


FIX = ("run `python exp/01-dist.py` (section 01_dist) or type the directory of a finished 01 "
       "run in the sidebar")


class ViewerError(Exception):
    """A problem with 01's output, phrased for the person looking at the page."""


def locate(typed: str, base: Path | None = None) -> tuple[str, tuple]:
    """The run directory named in the sidebar (one cache key however it is typed) and its
    stamp; a path the system refuses (too long, unreadable, a NUL byte) is a one-line
    ViewerError, never a traceback in the page."""
    try:
        directory = run_directory(typed, base)
        return str(directory), stamp(directory)
    except (OSError, ValueError) as err:
        raise ViewerError(f"cannot open {_short(typed)}: {_reason(err)}; {FIX}") from err


def stamp(path: str | Path) -> tuple:
    """Size and modification time of the run's two files: a new 01 run changes it (and so
    invalidates whatever the page cached for the old one)."""
    directory = run_directory(path)
    return tuple((f.stat().st_size, f.stat().st_mtime_ns) if f.is_file() else None
                 for f in (directory / JSON_NAME, directory / NPZ_NAME))


def run_directory(path: str | Path, base: Path | None = None) -> Path:
    """The directory of 01's output named by `path` (it or its distributions.json; relative
    paths start at `base`, the YAML's folder, else the working directory)."""
    path = Path(path).expanduser()
    if not path.is_absolute():
        path = (base or Path.cwd()) / path
    return path.parent if path.name == JSON_NAME else path


def open_run(path: str | Path) -> Distributions:
    """01's output in `path` (its directory or distributions.json), checked: the JSON parses
    and has the layout this viewer reads, and the NPZ holds every array the JSON lists."""
    try:
        return _open_run(run_directory(path))
    except (OSError, ValueError) as err:  # unreadable files, permissions, odd paths
        raise ViewerError(f"cannot read {_short(path)}: {_reason(err)}; {FIX}") from err


def _open_run(directory: Path) -> Distributions:
    if not directory.is_dir():
        raise ViewerError(f"{directory} does not exist; {FIX}")
    if not (directory / JSON_NAME).is_file():
        raise ViewerError(f"{directory} holds no {JSON_NAME}; {FIX}")
    if not (directory / NPZ_NAME).is_file():
        raise ViewerError(f"{directory} holds {JSON_NAME} but no {NPZ_NAME}; 01 did not finish "
                          f"there: {FIX}")
    try:
        run = load_distributions(directory, verify=False)  # checked below, once the JSON is
    except json.JSONDecodeError as err:
        raise ViewerError(f"{directory / JSON_NAME} is not valid JSON (line {err.lineno}); "
                          f"the file is damaged: {FIX}") from err
    except UnicodeDecodeError as err:
        raise ViewerError(f"{directory / JSON_NAME} is not UTF-8 text; the file is damaged: "
                          f"{FIX}") from err
    version = run.meta.get("format_version") if isinstance(run.meta, dict) else None
    if version != FORMAT_VERSION:
        raise ViewerError(f"{directory / JSON_NAME} has format_version {version!r}; this viewer "
                          f"reads version {FORMAT_VERSION}: {FIX}")
    missing = [k for k in ("questions", "arrays", "summary", "token_strings") if k not in run.meta]
    if missing:
        raise ViewerError(f"{directory / JSON_NAME} lacks {', '.join(missing)}: {FIX}")
    if not any(q["samples"] for q in run.questions):
        raise ViewerError(f"{directory} holds no responses (00 sampled none): nothing to show")
    try:
        for name in run.names:
            run.array(name)  # checks the member's dtype and shape against the JSON
        run.verify()         # and every member's CRC-32: damage is named, not shown as numbers
    except (ValueError, KeyError, OSError, zipfile.BadZipFile) as err:
        raise ViewerError(f"{directory / NPZ_NAME} cannot be read ({_reason(err)}): "
                          f"{FIX}") from err
    return run


def _short(path, limit: int = 120) -> str:
    """A path as typed, cut to `limit` characters."""
    text = str(path)
    return repr(text if len(text) <= limit else text[:limit] + "…")


def _reason(err: Exception) -> str:
    """An exception's message on one line, without the path it may repeat in full."""
    reason = getattr(err, "strerror", None) or str(err)
    return " ".join(reason.split())[:200]


def outcome(sample: dict) -> str:
    """truncated (stopped by max_new_tokens, whatever its reward), else correct or incorrect."""
    if sample.get("finish_reason") == "length":
        return "truncated"
    return "correct" if sample["reward"] > 0 else "incorrect"


def prompt_table(run: Distributions) -> pd.DataFrame:
    """One row per question: its level, accuracy, mean entropy and length, outcome counts."""
    rows = []
    for q, question in enumerate(run.questions):
        samples = question["samples"]
        outcomes = [outcome(s) for s in samples]
        rows.append({
            "question": q, "id": question.get("id"),
            "level": (question.get("metadata") or {}).get("level"),
            "samples": len(samples),
            "accuracy": float(np.mean([s["reward"] > 0 for s in samples])) if samples else None,
            "mean_entropy": float(np.mean([s["mean_entropy"] for s in samples]))
            if samples else None,
            "mean_length": float(np.mean([s["length"] for s in samples])) if samples else None,
            **{name: outcomes.count(name) for name in OUTCOMES},
            "text": question["question"]})
    return pd.DataFrame(rows)


def filter_prompts(table: pd.DataFrame, outcomes=OUTCOMES, levels=None, search: str = "",
                   sort: str = "question order", descending: bool = False) -> pd.DataFrame:
    """The questions with at least one response of the chosen outcomes, at the chosen levels
    (None: any), whose text or id contains `search` (any case), sorted by `sort`."""
    keep = table[list(outcomes)].sum(axis=1) > 0  # no outcome chosen: no question
    if levels is not None:
        keep &= table["level"].isin(levels)
    if search.strip():
        needle = search.strip().lower()
        keep &= (table["text"].str.lower().str.contains(needle, regex=False)
                 | table["id"].astype(str).str.lower().str.contains(needle, regex=False))
    return table[keep].sort_values(SORT_KEYS[sort], ascending=not descending, kind="stable",
                                   na_position="last")


def sample_table(run: Distributions, question: int) -> pd.DataFrame:
    """One row per response of `question`: outcome, reward, extracted answer, length, entropy."""
    return pd.DataFrame([{
        "sample": s, "outcome": outcome(rec), "reward": rec["reward"],
        "extracted": rec.get("extracted"), "tokens": rec["length"],
        "mean entropy": rec["mean_entropy"], "max entropy": rec["max_entropy"],
        "log p (sum)": rec["logprob_sum"], "status": rec.get("status")}
        for s, rec in enumerate(run.questions[question]["samples"])])


def view_values(arrays: dict[str, np.ndarray], view: str) -> np.ndarray:
    """The per-token values a view colours by, from a sample's arrays."""
    return VIEWS[view].values(arrays[VIEWS[view].array].astype(np.float64))


def _spread(run: Distributions, name: str) -> np.ndarray:
    """The flat array `name`: all of it up to QUANTILE_SAMPLE tokens, beyond that an evenly
    spaced QUANTILE_SAMPLE of them."""
    flat = run.array(name)
    return np.asarray(flat[::-(-len(flat) // QUANTILE_SAMPLE)], dtype=np.float64)


def scale_top(run: Distributions, view: str, quantile: float) -> float:
    """The `quantile` of the finite values of the view's scale over the run's tokens (see
    _spread); a token the trainer's filters drop has an infinite sampler gap and takes the
    top colour without stretching the scale."""
    scale = VIEWS[VIEWS[view].scale]
    values = scale.values(_spread(run, scale.array))
    values = values[np.isfinite(values)]
    return float(np.quantile(values, quantile)) if len(values) else 0.0


def entropies_equal(run: Distributions) -> bool:
    """Whether 00 sampled from the full distribution (T=1, no top-p/k/min-p): then the two
    entropies are the same numbers and the page shows one."""
    return bool(np.allclose(_spread(run, "entropy"), _spread(run, "sampled_entropy"),
                            rtol=1e-5, atol=1e-6))


def views(run: Distributions, equal_entropies: bool) -> list[str]:
    """The views this run can show: its arrays, one entropy if they are equal."""
    return [name for name, view in VIEWS.items() if view.array in run.names
            and not (equal_entropies and name == "sampled entropy")]


def sample_arrays(run: Distributions, question: int, sample: int) -> dict[str, np.ndarray]:
    """A response's per-token arrays. A full distribution (01 with top_k null) stays on disk:
    a response's (tokens x vocabulary) rows can take gigabytes; `top_alternatives` reads the
    one row it needs."""
    return run.sample(question, sample, [name for name in run.names if name != "probs"])


def top_alternatives(run: Distributions, question: int, sample: int,
                     arrays: dict[str, np.ndarray], position: int, count: int) -> pd.DataFrame:
    """The `count` most likely tokens at `position`, most likely first, plus the sampled
    token as a last row if it is not among them (its probability is exp(logprob))."""
    sampled = int(arrays["token_ids"][position])
    if "topk_ids" in arrays:
        ids, probs = arrays["topk_ids"][position][:count], arrays["topk_probs"][position][:count]
    else:  # 01 stored the whole distribution
        row = np.asarray(run.array("probs")[run.record(question, sample)["start"] + position])
        ids = np.argsort(-row, kind="stable")[:count]
        probs = row[ids]
    rows = [{"rank": r, "id": int(i), "token": run.token_string(int(i)), "probability": float(p),
             "sampled": int(i) == sampled} for r, (i, p) in enumerate(zip(ids, probs))]
    if not any(row["sampled"] for row in rows):
        rows.append({"rank": int(arrays["rank"][position]), "id": sampled,
                     "token": run.token_string(sampled),
                     "probability": float(np.exp(arrays["logprob"][position])), "sampled": True})
    return pd.DataFrame(rows)


def tooltip(i: int, arrays: dict[str, np.ndarray], equal_entropies: bool) -> str:
    sampled = "" if equal_entropies else f"  H_sampled {fixed(arrays['sampled_entropy'][i], 3)}"
    return (f"#{i}  H {fixed(arrays['entropy'][i], 3)}{sampled}"
            f"  log p {fixed(arrays['logprob'][i], 3)}  rank {arrays['rank'][i]}")
