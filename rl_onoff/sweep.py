"""One stage over a grid of settings: `--sweep KEY=V1,V2,...` (repeatable; the grid is the
product of the lists).

    python exp/00-sample.py --sweep 00_sample.sampling.temperature=0.6,1.0 --sweep defaults.seed=0,1

Every combination is an ordinary run of the stage, one after another in this process:
its own output folder `<output_dir>-sweep/<key>=<value>,...` (named from the swept
values, safe on any filesystem), its own run record, and one `tracking.group` shared by
the whole grid (`--group`, else the group of an earlier attempt at the same sweep, else
the swept keys and a timestamp), which `python -m rl_onoff.runs compare --group G` lays
out. Values are read as YAML, as with --set; a comma inside [...], {...} or quotes does
not split. Every combination's config is validated before the first one runs.

A combination is finished when a run record of this stage with the same settings (all
but where it is recorded and written) finished and its output folder still holds the
run's run_config.json; a rerun skips those, so a killed sweep does only what is left.
"""

from __future__ import annotations

import dataclasses
import gc
import hashlib
import itertools
import json
import re
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Callable

from rl_onoff.config import Config, ConfigError, load_config, parse_override
from rl_onoff.runs import Catalog, Record, key_metrics, short_labels, table

# Keys the sweep sets itself for each combination.
SET_BY_SWEEP = ("output_dir", "tracking.group")
# Section keys that say where a run is recorded and written, not what it computes.
WHERE_KEYS = ("tracking", "output_dir", "on_config_change")
SAFE = re.compile(r"[^A-Za-z0-9._+=,@-]")
MAX_NAME = 120          # folder-name characters; longer names are cut and end in a hash
SWEEP_SUFFIX = "-sweep"


@dataclass
class Axis:
    """One --sweep: a dotted key and its values as typed (YAML text)."""
    key: str
    values: list[str]


@dataclass
class Combination:
    """One point of the grid: the values it sets and the validated config that runs it."""
    values: dict[str, str]          # dotted key -> value text
    name: str                       # its output folder's name
    out: Path | None = None
    config: Config | None = None

    @property
    def overrides(self) -> list[str]:
        return [f"{k}={v}" for k, v in self.values.items()]


@dataclass
class Outcome:
    combination: Combination
    status: str                     # finished | skipped | failed
    record: Record | None = None
    error: str | None = None


def split_values(text: str) -> list[str]:
    """`0.6,1.0` -> ["0.6", "1.0"]; commas inside brackets, braces or quotes do not split."""
    parts, depth, quote, start = [], 0, None, 0
    for i, char in enumerate(text):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(text[start:i].strip())
            start = i + 1
    parts.append(text[start:].strip())
    return parts


def parse_axis(text: str) -> Axis:
    """`section.key=V1,V2,...` -> Axis."""
    key, _, raw = text.partition("=")
    key = key.strip()
    parts = key.split(".")
    if not raw or len(parts) < 2 or not all(parts):
        raise ConfigError(f"--sweep {text!r}: expected section.key=V1,V2,..., e.g. "
                          "00_sample.sampling.temperature=0.6,1.0")
    values = split_values(raw)
    if any(not v for v in values):
        raise ConfigError(f"--sweep {text!r}: an empty value; give {key}=V1,V2,... (quote a "
                          "value that is an empty string: '')")
    if len(set(values)) < len(values):
        raise ConfigError(f"--sweep {text!r}: a value is listed twice")
    for own in SET_BY_SWEEP:
        if key.endswith("." + own):
            raise ConfigError(f"--sweep {key}: the sweep sets {own} itself for each combination "
                              f"({'give --group instead' if 'group' in own else 'one folder per combination'})")
    return Axis(key, values)


def folder_name(values: dict[str, str], labels: dict[str, str]) -> str:
    """`temperature=0.6,top_p=0.9`, made safe for a filesystem (a long one is cut and
    ends in a hash of the whole)."""
    text = ",".join(f"{labels[k]}={v}" for k, v in values.items())
    safe = SAFE.sub("_", text.replace(" ", ""))
    if len(safe) > MAX_NAME:
        safe = f"{safe[:MAX_NAME - 9]}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"
    return safe


def grid(axes: list[Axis]) -> list[Combination]:
    """Every combination of the axes' values, first axis slowest."""
    keys = [a.key for a in axes]
    if len(set(keys)) < len(keys):
        raise ConfigError(f"--sweep: {min(k for k in keys if keys.count(k) > 1)} is swept "
                          "twice; give all its values in one --sweep KEY=V1,V2,...")
    labels = dict(zip(keys, short_labels(keys)))
    combos = [Combination(dict(zip(keys, values)), "")
              for values in itertools.product(*(a.values for a in axes))]
    for combo in combos:
        combo.name = folder_name(combo.values, labels)
    names = [c.name for c in combos]
    clash = next((n for n in names if names.count(n) > 1), None)
    if clash:
        raise ConfigError(f"--sweep: two combinations would share the folder {clash!r} (values "
                          "that differ only in characters a folder name cannot hold); "
                          "change one of the values")
    return combos


def plan(section: str, configs: list[str], overrides: list[str], sweeps: list[str],
         group: str | None) -> tuple[list[Combination], str]:
    """The combinations, each with its folder and validated config, and the group name."""
    axes = [parse_axis(text) for text in sweeps]
    set_keys = {".".join(parse_override(o)[0]) for o in overrides}
    both = [a.key for a in axes if a.key in set_keys]
    if both:
        raise ConfigError(f"{both[0]} is given by --set and --sweep; keep one")
    base = load_config(configs or None, overrides, section)
    if not hasattr(base[section], "output_dir"):
        raise ConfigError(f"--sweep: {section} writes no output folder; nothing to sweep")
    root = Path(f"{base.resolve(base[section].output_dir)}{SWEEP_SUFFIX}")
    combos = grid(axes)
    for combo in combos:
        combo.out = root / combo.name
        where = f"{section}.output_dir={json.dumps(str(combo.out))}"
        try:
            combo.config = load_config(configs or None,
                                       [*overrides, *combo.overrides, where], section)
        except ConfigError as err:
            raise ConfigError(f"--sweep combination {combo.name}: {err}") from None
    group = group or earlier_group(section, combos) or default_group(axes)
    for combo in combos:
        tracking = dataclasses.replace(combo.config[section].tracking, group=group)
        combo.config = combo.config.replace(section, tracking=tracking)
    return combos, group


def default_group(axes: list[Axis]) -> str:
    labels = short_labels([a.key for a in axes])
    return f"{'+'.join(labels)}_{datetime.now().strftime('%Y%m%d-%H%M%S')}"


# ---------------------------------------------------------------------------
# Earlier attempts


def settings(config_dict: dict, section: str) -> str:
    """A section's settings less where it is recorded and written, comparable as text."""
    values = {k: v for k, v in (config_dict.get(section) or {}).items() if k not in WHERE_KEYS}
    return json.dumps(values, sort_keys=True, default=str)


def _wrote_to(record: Record, out: Path) -> bool:
    """Whether the record's output folder is `out`, inside it, or written beside it by
    on_config_change: new_dir (`<out>-<hash>`)."""
    where = record.info.get("output_dir")
    if not where:
        return False
    path = Path(where)
    return (path == out or out in path.parents
            or (path.parent == out.parent and re.fullmatch(re.escape(out.name) + r"-[0-9a-f]{8}",
                                                            path.name) is not None))


def attempts(combo: Combination, section: str) -> list[Record]:
    """This combination's run records with its settings, oldest first."""
    cfg = combo.config[section]
    catalog = Catalog.scan([combo.config.resolve(cfg.tracking.root)])
    script = section.replace("_", "-")
    want = settings(combo.config.to_dict(), section)
    return [r for r in catalog.of_script(script)
            if _wrote_to(r, combo.out) and settings(r.config, section) == want]


def finished(record: Record) -> bool:
    where = record.info.get("output_dir")
    return (record.status[0] == "finished" and where is not None
            and (Path(where) / "run_config.json").is_file())


def earlier_group(section: str, combos: list[Combination]) -> str | None:
    """The group of the newest earlier attempt at any combination, so a resumed sweep stays
    in one group."""
    records = sorted((r for c in combos for r in attempts(c, section)), key=lambda r: r.started)
    groups = [((r.config.get(section) or {}).get("tracking") or {}).get("group") for r in records]
    return next((g for g in reversed(groups) if g), None)


# ---------------------------------------------------------------------------
# Running


def run_sweep(run: Callable[[Config], object], section: str, configs: list[str],
              overrides: list[str], sweeps: list[str], group: str | None = None,
              expected: tuple[type, ...] = (ConfigError,)) -> list[Outcome]:
    """Run `run(config)` for every unfinished combination; an expected error ends that
    combination only. Prints a line per combination and the table of key metrics."""
    combos, group = plan(section, configs, overrides, sweeps, group)
    print(f"sweep: {len(combos)} combinations in group {group}, folders under "
          f"{combos[0].out.parent}")
    outcomes = []
    for i, combo in enumerate(combos, 1):
        done = [r for r in attempts(combo, section) if finished(r)]
        if done:
            print(f"sweep {i}/{len(combos)} {combo.name}: finished earlier ({done[-1].path_id}); "
                  "skipped")
            outcomes.append(Outcome(combo, "skipped", done[-1]))
            continue
        print(f"sweep {i}/{len(combos)} {combo.name}: running", flush=True)
        try:
            run(combo.config)
        except expected as err:
            print(f"sweep {i}/{len(combos)} {combo.name}: error: {err}", file=sys.stderr)
            outcomes.append(Outcome(combo, "failed", _newest(combo, section), str(err)))
            continue
        finally:
            release_memory()
        outcomes.append(Outcome(combo, "finished", _newest(combo, section)))
    print(f"\n{report(outcomes, section)}\n\ncompare: python -m rl_onoff.runs compare --group "
          f"{group}")
    return outcomes


def _newest(combo: Combination, section: str) -> Record | None:
    found = attempts(combo, section)
    return found[-1] if found else None


def release_memory() -> None:
    """Drop the finished combination's model before the next one loads its own."""
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


def report(outcomes: list[Outcome], section: str) -> str:
    """One row per combination: its swept values, status, run record, key metrics."""
    keys = list(outcomes[0].combination.values)
    records = [o.record for o in outcomes if o.record is not None]
    metrics = list(dict.fromkeys(k for r in records for k in key_metrics(r)))
    rows = [[*o.combination.values.values(), o.status,
             o.record.id if o.record else "-",
             *[o.record.metrics.get(m) if o.record else None for m in metrics]]
            for o in outcomes]
    return table([*short_labels(keys), "status", "run", *metrics], rows)
