"""Turning rows (local files or hub datasets) into dataset records.

Every source goes through one converter, so a benchmark read from the hub, a
local copy of it and a verl/SimpleRL parquet file all give the same records. A
row is read as the verl layout when it has `prompt` and `reward_model`, and as
flat columns (question/problem, answer, ...) otherwise; a `field_map` overrides
any field with a dotted path into the row (e.g. "reward_model.ground_truth").
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from rl_onoff.tasks.extract import last_boxed

log = logging.getLogger(__name__)

FIELDS = ("id", "question", "answer", "solution", "level", "subject", "source")
SUFFIXES = (".parquet", ".jsonl", ".json")
# Flat layouts (hub datasets and their local copies): the first column present wins.
FLAT_COLUMNS = {
    "question": ("question", "problem"),
    "answer": ("answer", "solution"),  # MATH has only a solution: its \boxed{} is the answer
    "solution": ("solution",),
    "level": ("level",),
    "subject": ("subject", "type"),
}
PATH_HINT = ("set the `path` option (in the YAML: `<section>.dataset.path`) to a directory "
             "holding <split>.parquet/.jsonl/.json (or <name>/<split>.*), or to one such file")


def load_local(path: str | Path, split: str, name: str | None = None,
               field_map: dict[str, str] | None = None) -> list[dict]:
    """Records of `split` from a local file or directory.

    `name` is the registered dataset (it fixes ids and `source`); without it
    (the generic `files` dataset) ids come from the file name and `source` from
    the rows' `data_source`.
    """
    file = split_file(Path(path).expanduser(), split, name)
    label = name or (file.parent.name if file.stem == split else file.stem)
    return to_records(read_rows(file), label=label, split=split, origin=str(file),
                      field_map=field_map, source=name)


def split_file(path: Path, split: str, name: str | None = None) -> Path:
    """`path` itself when it is a file, else `<path>/<split>.*` or `<path>/<name>/<split>.*`."""
    if path.is_file():
        return path
    if not path.is_dir():
        raise FileNotFoundError(f"dataset path {path} does not exist; {PATH_HINT}")
    folders = [path] + ([path / name] if name and (path / name).is_dir() else [])
    for folder in folders:
        for suffix in SUFFIXES:
            if (folder / f"{split}{suffix}").is_file():
                return folder / f"{split}{suffix}"
    found = sorted({f.stem for folder in folders for f in folder.iterdir() if f.suffix in SUFFIXES})
    raise ValueError(f"no split {split!r} in {path}: looked for {split}.parquet/.jsonl/.json in "
                     f"{', '.join(map(str, folders))}; splits there: {found or 'none'}")


def read_rows(file: Path) -> list[dict]:
    """The rows of a .parquet, .jsonl or .json (a list of objects) file."""
    suffix = file.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq
        rows = pq.read_table(file).to_pylist()
    elif suffix == ".jsonl":
        rows = [_json_line(file, number, line)
                for number, line in enumerate(file.read_text(encoding="utf-8").splitlines(), 1)
                if line.strip()]
    elif suffix == ".json":
        rows = json.loads(file.read_text(encoding="utf-8"))
    else:
        raise ValueError(f"{file}: unsupported file type {suffix!r}; use one of {SUFFIXES}")
    if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
        raise ValueError(f"{file}: expected a list of JSON objects (one row each)")
    return rows


def _json_line(file: Path, number: int, line: str) -> dict:
    try:
        return json.loads(line)
    except json.JSONDecodeError as err:
        raise ValueError(f"{file}:{number}: not valid JSON ({err})") from err


def to_records(rows: list[dict], *, label: str, split: str, origin: str,
               field_map: dict[str, str] | None = None, source: str | None = None) -> list[dict]:
    """Records for `rows`; `origin` (file or hub id) names the rows in errors and reports.

    Rows with an empty question or answer are kept, and logged, so a broken
    source shows up instead of silently shrinking the dataset.
    """
    _check_field_map(field_map, origin)
    records = [_record(_fields(row, field_map, origin, index), index, label, split, source)
               for index, row in enumerate(rows)]
    empty = empty_rows(records)
    if empty:
        log.warning("%s: %d row(s) with an empty question or answer (kept): %s",
                    origin, len(empty), ", ".join(empty[:20]))
    return records


def empty_rows(records: list[dict]) -> list[str]:
    """Ids of the records whose question or answer is empty."""
    return [r["id"] for r in records if not r["question"] or not r["answer"]]


def lookup(row: dict, path: str):
    """The value at a dotted `path` ("reward_model.ground_truth", "prompt.0.content")."""
    value = row
    for part in path.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            raise KeyError(path)
    return value


def _check_field_map(field_map: dict[str, str] | None, origin: str) -> None:
    unknown = sorted(set(field_map or {}) - set(FIELDS))
    if unknown:
        raise ValueError(f"{origin}: field_map keys {unknown} are not record fields; "
                         f"allowed: {list(FIELDS)} (map our field -> the file's dotted path)")


def _fields(row: dict, field_map: dict[str, str] | None, origin: str, index: int) -> dict:
    """Raw field values of one row: its layout's defaults, then the field_map."""
    fields = _verl_fields(row) if "prompt" in row and "reward_model" in row else _flat_fields(row)
    for field, path in (field_map or {}).items():
        try:
            fields[field] = lookup(row, path)
        except KeyError:
            raise ValueError(f"{origin}: field_map[{field!r}] = {path!r} is not in row {index} "
                             f"(its fields: {sorted(row)}); fix the dotted path in field_map") from None
    missing = [f for f in ("question", "answer") if f not in fields]
    if missing:
        raise ValueError(f"{origin}: row {index} has no {' or '.join(missing)} field (its fields: "
                         f"{sorted(row)}); set field_map, e.g. "
                         "{'question': 'problem', 'answer': 'reward_model.ground_truth'}")
    return fields


def _flat_fields(row: dict) -> dict:
    fields = {}
    for field, columns in FLAT_COLUMNS.items():
        present = [row[c] for c in columns if c in row]
        if present:
            fields[field] = _first(*present)
    return fields


def _verl_fields(row: dict) -> dict:
    """verl/SimpleRL: question in `prompt` (or `extra_info.question`, unwrapped), answer in
    `reward_model.ground_truth` (a string or a struct with `target`, maybe `solution`)."""
    extra = row.get("extra_info") or {}
    truth = (row.get("reward_model") or {}).get("ground_truth")
    truth = truth if isinstance(truth, dict) else {"target": truth}
    solution = _first(row.get("solution"), truth.get("solution"))
    return {
        "question": _first(extra.get("question"), _user_text(row["prompt"])),
        "answer": _first(truth.get("target"), extra.get("answer"), solution),
        "solution": solution,
        "level": _first(row.get("level"), extra.get("level")),
        "subject": _first(row.get("subject"), row.get("type")),
        "source": row.get("data_source"),
    }


def _user_text(prompt) -> str | None:
    """The first user message of a chat prompt (or the prompt, if it is a string)."""
    if isinstance(prompt, str):
        return prompt
    messages = [m for m in prompt or [] if m.get("role") == "user"] or list(prompt or [])
    return messages[0].get("content") if messages else None


def _record(fields: dict, index: int, label: str, split: str, source: str | None) -> dict:
    record = {
        "id": _text(fields.get("id")) or f"{label}-{split}-{index:06d}",
        "question": _text(fields["question"]),
        "answer": reference_answer(fields["answer"]),
        "source": source or _text(fields.get("source")) or label,
    }
    level, subject, solution = (_level(fields.get("level")), _text(fields.get("subject")),
                                _text(fields.get("solution")))
    if level is not None:
        record["level"] = level
    if subject:
        record["subject"] = subject
    if solution:
        record["solution"] = solution
    return record


def reference_answer(value) -> str:
    """The final answer: a `target` struct unwrapped, GSM8K's text after '####', or a
    worked solution's last \\boxed{} (how MATH states its answers)."""
    text = _text(value.get("target") if isinstance(value, dict) else value)
    if "####" in text:
        return text.rsplit("####", 1)[1].strip()
    if "\\boxed{" in text:
        return last_boxed(text) or ""
    return text


def _level(value) -> int | None:
    """3 for 3, '3' or 'Level 3'; None when the level is missing or unknown ('Level ?')."""
    text = _text(value).removeprefix("Level").strip()
    return int(text) if text.isdigit() else None


def _text(value) -> str:
    """A field as stripped text; whole floats lose their '.0' (amc23 stores 27.0)."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip()


def _first(*values):
    """The first value that is set (neither None nor an empty string)."""
    return next((v for v in values if v is not None and v != ""), None)
