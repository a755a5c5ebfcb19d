"""Transitional: 00's stage moved to rl_onoff.sample; other stages still import resolve_path
from here until they move onto rl_onoff.stage (then this file goes)."""

from pathlib import Path

from rl_onoff.config import REPO_ROOT


def resolve_path(path: str) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() else REPO_ROOT / p
