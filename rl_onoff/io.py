"""File I/O shared by every stage: atomic writes, pickle-free loads.

Every write goes to a temporary file in the target directory and is renamed
into place, so a crash or Ctrl-C never leaves half a file behind.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Read once, at import: os.umask can only be read by setting it, which is not thread-safe.
_UMASK = _read_umask()


def _atomic_write(path: Path, write) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp makes the file private (0600); give it the mode open() would have
        os.chmod(tmp, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str) -> None:
    _atomic_write(path, lambda handle: handle.write(text.encode("utf-8")))


def write_json(path: Path, data: Any, indent: int | None = 2) -> None:
    write_text(path, json.dumps(data, indent=indent, ensure_ascii=False) + "\n")


def read_json(path: Path) -> Any:
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def save_figure(path: Path, fig, dpi: int = 110) -> None:
    """Write a matplotlib figure as PNG, atomically."""
    _atomic_write(path, lambda handle: fig.savefig(handle, format="png", dpi=dpi))


def save_npz(path: Path, arrays: dict) -> None:
    """Write arrays uncompressed (fast random access) and atomically."""
    import numpy as np

    _atomic_write(path, lambda handle: np.savez(handle, **arrays))


def load_npz(path: Path):
    """Open an NPZ lazily (arrays are read when indexed) and never unpickle."""
    import numpy as np

    return np.load(path, allow_pickle=False)


def append_jsonl(path: Path, records: dict | list[dict]) -> None:
    """Append one record or several, in one write: a crash leaves them whole or a last line
    cut short, which `read_jsonl` skips."""
    records = [records] if isinstance(records, dict) else records
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    with open(path, "a+b") as handle:
        if handle.seek(0, os.SEEK_END):
            handle.seek(-1, os.SEEK_END)
            if handle.read(1) != b"\n":
                text = "\n" + text  # a line cut short by a crash stays apart from the next
        handle.write(text.encode("utf-8"))
        handle.flush()


def read_jsonl(path: Path) -> list[dict]:
    records = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut short by a crash
    return records
