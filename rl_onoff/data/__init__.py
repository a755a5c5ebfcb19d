"""Dataset registry: one record shape for every source.

Every loader returns a list of dicts with at least `id`, `question`, `answer`
(strings) and, where the source has them, `level`, `subject`, `source`.
`load_dataset` applies the shared filters (levels, subjects) and the
`num_examples` cut, so each loader only has to read its source.
"""

from __future__ import annotations

import importlib
from typing import Callable

LOADERS: dict[str, Callable[..., list[dict]]] = {}


def register(name: str):
    """Decorator: make a loader `fn(split, **options) -> records` available by name."""
    def wrap(fn):
        LOADERS[name] = fn
        return fn
    return wrap


def available() -> list[str]:
    _import_builtin_loaders()
    return sorted(LOADERS)


def _import_builtin_loaders() -> None:
    from rl_onoff.data import benchmarks  # noqa: F401  (registers the benchmark sets)


@register("arith")
def _load_arith(split: str, seed: int = 0, **_: object) -> list[dict]:
    from rl_onoff.data import arith
    return arith.generate(split, seed=seed)


def loader(name: str) -> Callable[..., list[dict]]:
    """A registered loader, or a user's `module:function` with the same signature."""
    _import_builtin_loaders()
    if name in LOADERS:
        return LOADERS[name]
    if ":" in name:
        module, attr = name.split(":", 1)
        try:
            return getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as err:
            raise ValueError(f"dataset {name!r}: cannot import it ({err}); give module:function "
                             "of a function importable from the working directory") from err
    raise ValueError(f"unknown dataset {name!r}; available: {sorted(LOADERS)}, module:function "
                     "(your own loader), or 'files' with a `path` to a jsonl/parquet file")


def load_dataset(name: str, split: str = "test", num_examples: int | None = None, *,
                 levels: list | None = None, subjects: list | None = None,
                 **options) -> list[dict]:
    """Load `name` (a registered dataset or `module:function`) as a list of records.

    `levels` / `subjects` keep only records whose `level` / `subject` is listed;
    `num_examples` keeps the first N after filtering. Other options go to the
    loader (e.g. `path` for a local copy, `seed` for arith).
    """
    records = loader(name)(split, **options)
    if levels is not None:
        wanted = {str(level) for level in levels}
        records = [r for r in records if str(r.get("level")) in wanted]
    if subjects is not None:
        wanted = {str(s).lower() for s in subjects}
        records = [r for r in records if str(r.get("subject", "")).lower() in wanted]
    if num_examples is not None:
        records = records[:num_examples]
    return records
