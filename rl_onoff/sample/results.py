"""00's output as later stages read it: `load_results(path)`, beside 01's `load_distributions`."""

from __future__ import annotations

import json
from pathlib import Path

from rl_onoff.stage import StageError

RESULTS, STATISTICS = "results.json", "statistics.json"
QUESTION_KEYS = ("id", "question", "reference", "prompt_token_ids", "samples")
SAMPLE_KEYS = ("token_ids", "text", "finish_reason", "reward")


def results_file(path: str | Path) -> Path:
    """00's results.json, given it or the directory holding it."""
    path = Path(path)
    return path / RESULTS if path.is_dir() or path.suffix != ".json" else path


def load_results(path: str | Path, key: str = "input") -> dict:
    """00's results.json, checked to be whole and complete; `key` (the YAML key that pointed
    here) goes into the message when it is not."""
    path = results_file(path)
    if not path.is_file():
        raise StageError(f"{key}: {path} not found; run exp/00-sample.py first, or point {key} "
                         "at 00's output directory or its results.json")
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise StageError(f"{path}: not UTF-8 text ({err.reason}); rerun exp/00-sample.py") from err
    except json.JSONDecodeError as err:
        raise StageError(f"{path}: not valid JSON (cut short? {err.msg} at line {err.lineno}); "
                         "rerun exp/00-sample.py to rewrite it") from err
    problem = _incomplete(results)
    if problem:
        raise StageError(f"{path}: incomplete 00 results ({problem}); rerun exp/00-sample.py")
    return results


def _incomplete(results) -> str | None:
    if not isinstance(results, dict) or not isinstance(results.get("questions"), list):
        return "no `questions` list"
    for key in ("model", "generation"):
        if not isinstance(results.get(key), dict):
            return f"no `{key}` record"
    for q, question in enumerate(results["questions"]):
        missing = [k for k in QUESTION_KEYS if k not in question]
        if missing:
            return f"question {q} lacks {', '.join(missing)}"
        for s, sample in enumerate(question["samples"]):
            missing = [k for k in SAMPLE_KEYS if k not in sample]
            if missing:
                return f"question {q} sample {s} lacks {', '.join(missing)}"
    return None
