"""Find, compare and plot recorded runs, without a cloud account.

    python -m rl_onoff.runs list    [--script S] [--last N]
    python -m rl_onoff.runs show    RUN
    python -m rl_onoff.runs compare [RUN ...] [--metric M ...] [--plot PATH.png] [--x step|time]
    python -m rl_onoff.runs compare --group G [--metric M ...] [--plot PATH.png] [--x KEY]
    python -m rl_onoff.runs best    --metric M [--min] [--script S]
    python -m rl_onoff.runs export  RUN --csv [PATH|-]

Every subcommand takes `--root DIR` (default: exp/runs in the repository) or
`--config YAML` (the roots its `tracking.root` keys name). RUN is a record
directory, its name (`<name>_<timestamp>`), or a unique prefix or substring of
`<script>/<name>_<timestamp>`. The records are the ones rl_onoff.tracking
writes; a record left "running" by a killed process is reported "crashed".
`compare --group G` lays out the runs of one tracking group (a sweep: rl_onoff.sweep)
as a grid, one row per combination of the settings that differ between them.
"""

from __future__ import annotations

import argparse
import csv
import fnmatch
import json
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import cached_property
from io import StringIO
from pathlib import Path

from rl_onoff import io, tracking
from rl_onoff.colors import color_for, model_key, short_name
from rl_onoff.config import ConfigError, TrackingConfig, default_config_path, load_config

# Summary entries that say how a run was made (its config says it too), not how it did.
NOT_METRICS = ("model", "config", "dataset", "generation", "seed")
# The summary metrics `list` shows per script; other scripts show their first few.
KEY_METRICS = {
    "00-sample": ("avg@n", "pass@k.1", "maj@n"),
    "01-dist": ("num_tokens", "mean_entropy", "mean_sampled_entropy"),
    "03-tree-search": ("accuracy.tree_best", "accuracy.greedy", "accuracy.best_of_n"),
    "04-proto": ("mean_accuracy", "status.success", "capacity.max"),
    "05-entropy": ("result.delta_h1.sequence.value", "result.held_out.sequence.value"),
}
LIST_METRICS = 3
# `compare` hides breakdowns nested deeper than this (by_level.1.avg@n) unless asked for.
DEFAULT_METRIC_DEPTH = 2
ABSENT = "(absent)"
# Config keys that say where a run's results went, not how it ran: not a setting of a grid
# or a plot label (with everything under `tracking`).
WHERE_KEYS = ("output_dir", "on_config_change")
X_AXES = {"step": "step", "time": "wall-clock seconds"}
DASHES = ("-", "--", ":", "-.")
MARKERS = ("o", "s", "^", "D", "v")


class RunsError(Exception):
    """Bad input on the command line: reported in one line with exit status 2."""


@dataclass
class Record:
    """One run directory, read lazily."""
    dir: Path
    info: dict

    @property
    def id(self) -> str:
        return self.dir.name

    @property
    def script(self) -> str:
        return self.info.get("script", self.dir.parent.name)

    @property
    def path_id(self) -> str:
        return f"{self.script}/{self.id}"

    @property
    def section(self) -> str:
        """The YAML section of the script that wrote it (00-sample -> 00_sample)."""
        return self.script.replace("-", "_")

    @cached_property
    def status(self) -> tuple[str, str | None]:
        return tracking.live_status(self.info)

    @cached_property
    def started(self) -> datetime:
        text = self.info.get("started_at")
        return datetime.fromisoformat(text) if text else datetime.min.replace(tzinfo=timezone.utc)

    @property
    def started_text(self) -> str:
        return _local_time(self.info.get("started_at"))

    @cached_property
    def config(self) -> dict:
        return _read_optional(self.dir / "config.json")

    @cached_property
    def env(self) -> dict:
        return _read_optional(self.dir / "env.json")

    @cached_property
    def summary(self) -> dict:
        return _read_optional(self.dir / "summary.json")

    @cached_property
    def steps(self) -> list[dict]:
        """metrics.jsonl, nested values flattened to dotted keys."""
        path = self.dir / "metrics.jsonl"
        return [tracking.flatten(r) for r in io.read_jsonl(path)] if path.is_file() else []

    @property
    def model(self) -> str:
        section = self.config.get(self.section) or self.config.get("defaults") or {}
        return self.info.get("model") or section.get("model") or "?"

    @cached_property
    def metrics(self) -> dict:
        """Numeric summary values by dotted key (pass@k.1), without NOT_METRICS."""
        kept = {k: v for k, v in self.summary.items() if k not in NOT_METRICS}
        return {k: v for k, v in tracking.flatten(kept).items() if tracking.is_number(v)}


def group_of(record: Record) -> str | None:
    """The tracking group the run was recorded in: its section's, else the defaults'."""
    for part in (record.config.get(record.section), record.config.get("defaults")):
        group = ((part or {}).get("tracking") or {}).get("group")
        if group:
            return group
    return None


def is_where_key(key: str) -> bool:
    """A dotted config key that says where a run was recorded or written."""
    parts = key.split(".")
    return "tracking" in parts or parts[-1] in WHERE_KEYS


def short_labels(keys: list[str]) -> list[str]:
    """The shortest dotted endings that tell the keys apart: 00_sample.sampling.temperature
    -> temperature, but defaults.seed and 00_sample.seed stay whole."""
    for n in range(1, max((k.count(".") + 1 for k in keys), default=1) + 1):
        labels = [".".join(k.split(".")[-n:]) for k in keys]
        if len(set(labels)) == len(labels):
            return labels
    return list(keys)


def _local_time(text: str | None) -> str | None:
    """A record's UTC timestamp in this machine's time zone, to the second."""
    if not text:
        return None
    return datetime.fromisoformat(text).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _read_optional(path: Path) -> dict:
    """A record's JSON file, or {} where the run never got to write it."""
    return io.read_json(path) if path.is_file() else {}


@dataclass
class Catalog:
    """The records under some roots, oldest first."""
    roots: list[Path]
    records: list[Record]

    @classmethod
    def scan(cls, roots: list[Path]) -> "Catalog":
        """Every readable record; a corrupt run.json is skipped with a warning on stderr."""
        records = []
        for root in roots:
            for path in Path(root).glob("*/*/run.json"):
                try:
                    info = io.read_json(path)
                except (OSError, ValueError) as err:
                    print(f"warning: skipped {path}: unreadable ({err.__class__.__name__})",
                          file=sys.stderr)
                    continue
                if isinstance(info, dict):
                    records.append(Record(path.parent, info))
                else:
                    print(f"warning: skipped {path}: not a run record", file=sys.stderr)
        return cls(roots, sorted(records, key=lambda r: (r.started, r.path_id)))

    def where(self) -> str:
        return ", ".join(str(r) for r in self.roots)

    def of_script(self, script: str | None) -> list[Record]:
        return [r for r in self.records if script in (None, r.script)]

    def of_group(self, group: str) -> list[Record]:
        return [r for r in self.records if group_of(r) == group]

    def groups(self) -> list[str]:
        return list(dict.fromkeys(g for g in map(group_of, self.records) if g))

    def resolve(self, ref: str) -> Record:
        """RUN as a directory, an exact name, then a unique prefix, then a unique substring."""
        path = Path(ref).expanduser()
        if (path / "run.json").is_file():
            return Record(path.resolve(), io.read_json(path / "run.json"))
        for matches in (lambda r: ref in (r.id, r.path_id),
                        lambda r: r.id.startswith(ref) or r.path_id.startswith(ref),
                        lambda r: ref in r.path_id):
            found = [r for r in self.records if matches(r)]
            if len(found) == 1:
                return found[0]
            if found:
                names = "\n  ".join(r.path_id for r in found)
                raise RunsError(f"{ref!r} matches {len(found)} runs; give more of the name:\n  {names}")
        raise RunsError(f"no run matches {ref!r} under {self.where()} "
                        "(`python -m rl_onoff.runs list` shows the runs)")


# ---------------------------------------------------------------------------
# Plain-text output


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return _number(value)
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def _number(value: float) -> str:
    """Four decimals (accuracies line up in a column), fewer for big numbers, exponents for extremes."""
    if value != 0 and not 1e-3 <= abs(value) < 1e6:
        return f"{value:.3e}"
    return f"{value:.4f}" if abs(value) < 100 else f"{value:.1f}"


def _exact(value) -> str:
    """A config value as written (1.0 stays 1.0, null stays null), unlike a rounded metric."""
    return value if isinstance(value, str) else json.dumps(value)


def table(header: list[str] | None, rows: list[list]) -> str:
    """Aligned columns: all-number columns to the right, others to the left."""
    cells = [[_cell(v) for v in row] for row in ([header] if header else []) + rows]
    width = len(cells[0])
    widths = [max(len(row[i]) for row in cells) for i in range(width)]
    right = [all(tracking.is_number(row[i]) or row[i] is None for row in rows) for i in range(width)]
    lines = ["  ".join(c.rjust(w) if r else c.ljust(w) for c, w, r in zip(row, widths, right))
             for row in cells]
    return "\n".join(line.rstrip() for line in lines)


def _union(key_lists) -> list[str]:
    """Keys in order of first appearance."""
    return list(dict.fromkeys(k for keys in key_lists for k in keys))


# ---------------------------------------------------------------------------
# list / show


def key_metrics(record: Record) -> list[str]:
    """The script's key metrics that the run has, else its first few (05's modes differ)."""
    wanted = [k for k in KEY_METRICS.get(record.script, ()) if k in record.metrics]
    return wanted or list(record.metrics)[:LIST_METRICS]


def cmd_list(args, catalog: Catalog) -> None:
    runs = catalog.of_script(args.script)
    runs = runs[-args.last:] if args.last else runs
    if not runs:
        print(f"no runs under {catalog.where()}" + (f" for script {args.script}" if args.script else ""))
        return
    keys = _union(key_metrics(r) for r in runs)
    rows = [[r.script, r.id, r.started_text, r.status[0], short_name(r.model),
             *[r.metrics.get(k) for k in keys]] for r in runs]
    print(table(["script", "run", "started", "status", "model", *keys], rows))


def _step_table(steps: list[dict]) -> str:
    keys = [k for k in _union(steps) if k != "step"]
    rows = []
    for key in keys:
        values = [s[key] for s in steps if tracking.is_number(s.get(key))]
        if values:
            rows.append([key, values[-1], min(values), max(values)])
    return table(["metric", "last", "min", "max"], rows)


def cmd_show(args, catalog: Catalog) -> None:
    r = catalog.resolve(args.run)
    status, why = r.status
    info = r.info
    fields = [("run", r.dir), ("script", r.script), ("name", info.get("name")),
              ("model", r.model), ("status", f"{status} ({why})" if why else status),
              ("started", r.started_text), ("finished", _local_time(info.get("finished_at"))),
              ("seconds", info.get("seconds")), ("host, pid", f"{info.get('host')}, {info.get('pid')}"),
              ("output", info.get("output_dir")), ("git commit", r.env.get("git_commit")),
              ("error", info.get("error"))]
    print(table(None, [[k, v] for k, v in fields if v is not None]))
    section = r.config.get(r.section)
    if section is not None:
        print(f"\nconfig ({r.section}):")
        print(table(["key", "value"], [[k, _exact(v)] for k, v in tracking.flatten(section).items()]))
    if r.metrics:
        print("\nsummary:")
        print(table(["metric", "value"], list(r.metrics.items())))
    steps = r.steps
    last = f"; the last is step {steps[-1]['step']} at {steps[-1]['time']} s" if steps else ""
    print(f"\nsteps: {len(steps)} logged{last}")
    if steps:
        print(_step_table(steps))
    for name, path in info.get("images", {}).items():
        print(f"image {name}: {path}")


# ---------------------------------------------------------------------------
# compare / best


def differences(dicts: list[dict]) -> list[tuple[str, list]]:
    """The dotted keys whose values are not the same in all `dicts`, with each one's value
    as text."""
    flats = [tracking.flatten(d) for d in dicts]
    out = []
    for key in _union(flats):
        values = [f.get(key, ABSENT) for f in flats]
        if len({json.dumps(v, sort_keys=True, default=str) for v in values}) > 1:
            out.append((key, [_exact(v) for v in values]))
    return out


def config_differences(runs: list[Record]) -> list[tuple[str, list]]:
    """Differences within the scripts' own section when all runs come from one script
    (other sections did not affect them), else within the whole config."""
    sections = {r.section for r in runs}
    if len(sections) == 1 and all(r.section in r.config for r in runs):
        return differences([{r.section: r.config[r.section]} for r in runs])
    return differences([r.config for r in runs])


def match_metrics(keys: list[str], patterns: list[str]) -> list[str]:
    return [k for k in keys if any(fnmatch.fnmatchcase(k, p) for p in patterns)]


def step_keys(runs: list[Record]) -> list[str]:
    """Numeric metrics logged per step (without the step counter and the clock)."""
    return [k for k in _union(s for r in runs for s in r.steps)
            if k not in ("step", "time") and any(tracking.is_number(s.get(k))
                                                 for r in runs for s in r.steps)]


def _check_patterns(patterns: list[str], summary: list[str], steps: list[str]) -> None:
    for pattern in patterns:
        if not match_metrics(summary + steps, [pattern]):
            raise RunsError(f"no metric matches {pattern!r}; summary metrics: "
                            f"{', '.join(summary) or 'none'}; step metrics: {', '.join(steps) or 'none'}")


def run_label(record: Record, diffs: list[tuple[str, list]], index: int) -> str:
    """The run's name plus what sets it apart, e.g. `tiny-arith_20261122-030603 temperature=0.6`."""
    shown = {}
    for key, values in diffs:
        if not is_where_key(key):
            shown.setdefault(key.rsplit(".", 1)[-1], values[index])
    return " ".join([record.id, *[f"{k}={v}" for k, v in list(shown.items())[:3]]])


def plot_trajectories(runs: list[Record], metrics: list[str], labels: list[str], path: Path,
                      x: str) -> None:
    """One panel per metric, one line per run; colour = model, dashes/markers tell apart
    runs of the same model."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    ncols = 1 if len(metrics) == 1 else 2
    nrows = -(-len(metrics) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(7 * ncols, 4 * nrows), squeeze=False,
                             layout="constrained")
    seen: dict[str, int] = {}
    styles = []
    for r in runs:
        n = seen[model_key(r.model)] = seen.get(model_key(r.model), -1) + 1
        styles.append(dict(color=color_for(r.model), linestyle=DASHES[n % len(DASHES)],
                           marker=MARKERS[n % len(MARKERS)]))
    for ax, metric in zip(axes.flat, metrics):
        for r, label, style in zip(runs, labels, styles):
            points = [(s[x], s[metric]) for s in r.steps if tracking.is_number(s.get(metric))]
            if points:
                xs, ys = zip(*points)
                ax.plot(xs, ys, label=label, linewidth=1.8, markersize=4 if len(xs) <= 40 else 0,
                        **style)
        ax.set(title=metric, xlabel=X_AXES[x], ylabel=metric)
        ax.grid(alpha=0.3)
        if x == "step":
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in axes.flat[len(metrics):]:
        ax.remove()
    handles = {label: h for ax in fig.axes for h, label in zip(*ax.get_legend_handles_labels())}
    fig.legend(handles.values(), handles.keys(), loc="outside lower center", fontsize="small",
               title="run (colour: model)", ncols=1 if len(handles) <= 4 else 2)
    scripts = ", ".join(dict.fromkeys(r.script for r in runs))
    fig.suptitle(f"{scripts}: metrics by {X_AXES[x]}")
    path.parent.mkdir(parents=True, exist_ok=True)
    io.save_figure(path, fig, dpi=120)
    plt.close(fig)


def cmd_compare(args, catalog: Catalog) -> None:
    if args.group:
        if args.runs:
            raise RunsError("give RUNs or --group, not both")
        return compare_group(args, catalog)
    args.x = args.x or "step"
    if args.x not in X_AXES:
        raise RunsError(f"--x {args.x}: allowed without --group: {', '.join(X_AXES)}")
    runs = [catalog.resolve(ref) for ref in args.runs]
    if not runs:
        if not catalog.records:
            raise RunsError(f"no runs under {catalog.where()}")
        runs = catalog.of_script(catalog.records[-1].script)[-2:]
        print(f"(no RUN given: the newest {len(runs)} {runs[0].script} runs)\n")
    summary_keys = _union(r.metrics for r in runs)
    plot_keys = step_keys(runs)
    _check_patterns(args.metric, summary_keys, plot_keys)
    columns = [str(i) for i in range(1, len(runs) + 1)]
    print(table(["#", "run", "status", "model", "started"],
                [[c, r.path_id, r.status[0], r.model, r.started_text] for c, r in zip(columns, runs)]))
    diffs = config_differences(runs)
    print("\nconfig differences:" if diffs else "\nconfig differences: none")
    if diffs:
        print(table(["key", *columns], [[k, *vs] for k, vs in diffs]))
    env_diffs = differences([r.env for r in runs])
    if env_diffs:
        print("\nenvironment differences:")
        print(table(["key", *columns], [[k, *vs] for k, vs in env_diffs]))
    metrics = (match_metrics(summary_keys, args.metric) if args.metric else
               [k for k in summary_keys if k.count(".") < DEFAULT_METRIC_DEPTH])
    if metrics:
        print("\nsummary metrics:")
        print(table(["metric", *columns], [[m, *[r.metrics.get(m) for r in runs]] for m in metrics]))
    if args.plot:
        plotted = match_metrics(plot_keys, args.metric) if args.metric else plot_keys
        if not plotted:
            raise RunsError(f"nothing to plot: the runs logged no step metric matching "
                            f"{', '.join(args.metric)}; step metrics: {', '.join(plot_keys) or 'none'}")
        labels = [run_label(r, diffs, i) for i, r in enumerate(runs)]
        plot_trajectories(runs, plotted, labels, Path(args.plot), args.x)
        print(f"\nwrote {args.plot} ({', '.join(plotted)} by {X_AXES[args.x]})")


# ---------------------------------------------------------------------------
# compare --group: a sweep's grid


@dataclass
class Grid:
    """A group's runs by the settings that differ between them (the swept keys)."""
    keys: list[str]                            # dotted config keys
    points: list[tuple[list[str], Record]]     # (each key's value as text, the run)
    hidden: int                                # other attempts at a point, not shown

    @property
    def labels(self) -> list[str]:
        return short_labels(self.keys)


def _value_order(text: str):
    """Numbers in numeric order, before texts in text order."""
    try:
        return (0, float(text), "")
    except ValueError:
        return (1, 0.0, text)


def group_grid(runs: list[Record]) -> Grid:
    """One point per combination of the differing settings; where a point was run more
    than once (a killed attempt, then a resumed one), its newest finished run, else its
    newest."""
    diffs = [(k, vs) for k, vs in config_differences(runs) if not is_where_key(k)]
    attempts: dict[tuple, list[Record]] = {}
    for i, record in enumerate(runs):
        attempts.setdefault(tuple(vs[i] for _, vs in diffs), []).append(record)
    points = []
    for values, records in attempts.items():
        done = [r for r in records if r.status[0] == "finished"]
        points.append((list(values), (done or records)[-1]))
    points.sort(key=lambda p: [_value_order(v) for v in p[0]])
    return Grid([k for k, _ in diffs], points, len(runs) - len(points))


def compare_group(args, catalog: Catalog) -> None:
    runs = catalog.of_group(args.group)
    if not runs:
        known = catalog.groups()
        raise RunsError(f"no runs in group {args.group!r} under {catalog.where()}; groups: "
                        f"{', '.join(known) or 'none'}")
    grid = group_grid(runs)
    records = [r for _, r in grid.points]
    summary_keys = _union(r.metrics for r in records)
    _check_patterns(args.metric, summary_keys, [])
    metrics = (match_metrics(summary_keys, args.metric) if args.metric
               else _union(key_metrics(r) for r in records))
    scripts = ", ".join(dict.fromkeys(r.script for r in records))
    hidden = f"; {grid.hidden} other attempts not shown" if grid.hidden else ""
    print(f"group {args.group}: {len(records)} {scripts} runs{hidden}\n")
    print(table([*grid.labels, "status", "run", *metrics],
                [[*values, r.status[0], r.path_id, *[r.metrics.get(m) for m in metrics]]
                 for values, r in grid.points]))
    if args.plot:
        if not metrics:
            raise RunsError("nothing to plot: the group's runs have no summary metrics "
                            "(none finished?)")
        x = grid_axis(grid, args.x)
        plot_grid(grid, x, metrics, Path(args.plot), f"{scripts}, group {args.group}")
        print(f"\nwrote {args.plot} ({', '.join(metrics)} against {grid.labels[x]})")


def grid_axis(grid: Grid, wanted: str | None) -> int:
    """The index of the swept key to plot against: `wanted` (a key or its label), else the
    first with numeric values, else the first."""
    if not grid.keys:
        raise RunsError("the group's runs do not differ in any setting: nothing to plot against")
    if wanted:
        for i, (key, label) in enumerate(zip(grid.keys, grid.labels)):
            if wanted in (key, label):
                return i
        raise RunsError(f"--x {wanted}: not a swept key of the group; swept: "
                        f"{', '.join(grid.labels)}")
    numeric = [i for i in range(len(grid.keys))
               if all(_value_order(values[i])[0] == 0 for values, _ in grid.points)]
    return numeric[0] if numeric else 0


def plot_grid(grid: Grid, x: int, metrics: list[str], path: Path, title: str) -> None:
    """One panel per metric against the swept key `x`, one line per combination of the other
    swept keys (coloured by model where a model is swept); bars: the 95% interval where the
    run recorded one (ci95.<metric>)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = grid.labels
    others = [i for i in range(len(labels)) if i != x]
    numeric = all(_value_order(values[x])[0] == 0 for values, _ in grid.points)
    ticks = list(dict.fromkeys(values[x] for values, _ in grid.points))
    model = next((i for i in others if grid.keys[i].rsplit(".", 1)[-1] == "model"), None)
    lines: dict[str, list[tuple[list[str], Record]]] = {}
    for values, record in grid.points:
        name = ", ".join(f"{labels[i]}={values[i]}" for i in others)
        lines.setdefault(name, []).append((values, record))

    ncols = 1 if len(metrics) == 1 else 2
    nrows = -(-len(metrics) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(6.5 * ncols, 4 * nrows), squeeze=False,
                             layout="constrained")
    for ax, metric in zip(axes.flat, metrics):
        for n, (name, points) in enumerate(lines.items()):
            xs, ys, low, high = [], [], [], []
            for values, record in points:
                value = record.metrics.get(metric)
                if value is None:
                    continue
                xs.append(float(values[x]) if numeric else ticks.index(values[x]))
                ys.append(value)
                low.append(value - record.metrics.get(f"ci95.{metric}.lo", value))
                high.append(record.metrics.get(f"ci95.{metric}.hi", value) - value)
            if xs:
                color = None if model is None else color_for(points[0][0][model])
                ax.errorbar(xs, ys, yerr=[low, high], label=name or None, capsize=3, color=color,
                            marker=MARKERS[n % len(MARKERS)], linestyle=DASHES[n % len(DASHES)])
        if not numeric:
            ax.set_xticks(range(len(ticks)), ticks, rotation=20)
        ax.set(title=metric, xlabel=labels[x], ylabel=metric)
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(metrics):]:
        ax.remove()
    if others:
        handles = {label: h for ax in fig.axes for h, label in zip(*ax.get_legend_handles_labels())}
        fig.legend(handles.values(), handles.keys(), loc="outside lower center", fontsize="small",
                   ncols=1 if len(handles) <= 4 else 2)
    fig.suptitle(f"{title}: by {labels[x]} (bars: 95% interval where recorded)")
    path.parent.mkdir(parents=True, exist_ok=True)
    io.save_figure(path, fig, dpi=120)
    plt.close(fig)


def cmd_best(args, catalog: Catalog) -> None:
    runs = catalog.of_script(args.script)
    having = [r for r in runs if args.metric in r.metrics]
    if not having:
        known = _union(r.metrics for r in runs)
        raise RunsError(f"no run has the summary metric {args.metric!r}; summary metrics: "
                        f"{', '.join(known) or 'none (no finished runs)'}")
    ranked = sorted(having, key=lambda r: r.metrics[args.metric], reverse=not args.min)
    best = ranked[0]
    print(f"best {args.metric} ({'lowest' if args.min else 'highest'}) of {len(ranked)} runs: "
          f"{best.path_id} = {_cell(best.metrics[args.metric])}\n")
    print(table(["rank", "run", "started", "model", args.metric],
                [[i, r.path_id, r.started_text, r.model, r.metrics[args.metric]]
                 for i, r in enumerate(ranked, 1)]))


# ---------------------------------------------------------------------------
# export


def cmd_export(args, catalog: Catalog) -> None:
    r = catalog.resolve(args.run)
    if not r.steps:
        raise RunsError(f"{r.path_id} logged no step metrics")
    buffer = StringIO()
    writer = csv.DictWriter(buffer, fieldnames=_union(r.steps), lineterminator="\n")
    writer.writeheader()
    writer.writerows(r.steps)
    if args.csv == "-":
        sys.stdout.write(buffer.getvalue())
        return
    path = Path(args.csv or f"{r.id}.metrics.csv")
    io.write_text(path, buffer.getvalue())
    print(f"wrote {path} ({len(r.steps)} steps)")


# ---------------------------------------------------------------------------
# Command line


def roots(args) -> list[Path]:
    """--root, else every tracking.root of --config, else the default exp/runs."""
    if args.root:
        return [Path(args.root).expanduser()]
    if args.config:
        config = load_config(args.config)
        found = [config.defaults.tracking.root, *[s.tracking.root for s in config.sections.values()]]
        return [config.resolve(r) for r in dict.fromkeys(found)]
    return [default_config_path().parent / TrackingConfig().root]


def build_parser() -> argparse.ArgumentParser:
    where = argparse.ArgumentParser(add_help=False)
    group = where.add_mutually_exclusive_group()
    group.add_argument("--root", help="the run records' root (default: exp/runs in the repository)")
    group.add_argument("--config", help="read the roots from this YAML's tracking.root keys")
    parser = argparse.ArgumentParser(prog="python -m rl_onoff.runs", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", parents=[where], help="the runs, oldest first")
    p.add_argument("--script", help="only this script's runs, e.g. 00-sample")
    p.add_argument("--last", type=int, metavar="N", help="only the newest N")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("show", parents=[where], help="one run: status, config, summary, steps")
    p.add_argument("run", metavar="RUN")
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("compare", parents=[where],
                       help="config differences and summary metrics side by side; --plot trajectories")
    p.add_argument("runs", nargs="*", metavar="RUN", help="default: the newest two of the last script")
    p.add_argument("--group", metavar="G", help="the runs of tracking group G (a sweep) as a grid: "
                   "the settings that differ as columns, one row per combination")
    p.add_argument("--metric", action="append", default=[], metavar="M",
                   help="only metrics matching M (repeatable; globs like 'pass@k.*'); default: all "
                        "but breakdowns such as by_level.*")
    p.add_argument("--plot", metavar="PATH.png", help="plot the step metrics (or those --metric "
                   "selects) of every run on one figure; with --group: the summary metrics "
                   "against a swept setting, one line per combination of the others")
    p.add_argument("--x", help="the plot's x axis: step (default), or time (wall-clock seconds "
                   "since the run started); with --group: a swept key (default: the first "
                   "numeric one)")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("best", parents=[where], help="rank runs by a summary metric")
    p.add_argument("--metric", required=True, metavar="M", help="a summary metric, e.g. avg@n or pass@k.1")
    p.add_argument("--min", action="store_true", help="lowest is best (default: highest)")
    p.add_argument("--script", help="only this script's runs")
    p.set_defaults(func=cmd_best)

    p = sub.add_parser("export", parents=[where], help="a run's step metrics as CSV")
    p.add_argument("run", metavar="RUN")
    p.add_argument("--csv", nargs="?", const="", required=True, metavar="PATH",
                   help="the file to write (default: <run>.metrics.csv here; '-': stdout)")
    p.set_defaults(func=cmd_export)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        args.func(args, Catalog.scan(roots(args)))
    except (RunsError, ConfigError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
