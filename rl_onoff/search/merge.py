"""Merge 03 runs that differ only in their seeds (say one process per seed) into one output.

    python -m rl_onoff.search.merge OUT RUN_DIR [RUN_DIR ...]

A seed's trees and samples depend on that seed alone, so runs of seeds [0], [1], [2] hold
exactly what one run of seeds [0, 1, 2] would; the summary, intervals and plot are then
computed over all seeds together. Runs must agree on everything else (dataset, task, reward,
settings, questions) and not share a seed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rl_onoff import io
from rl_onoff.search.run import Setting, build_summary, write_outputs
from rl_onoff.stage import StageError

RESAMPLES = 2000


def merge(out: Path, runs: list[Path], resamples: int = RESAMPLES) -> dict:
    results = [io.read_json(run / "results.json") for run in runs]
    summaries = [io.read_json(run / "summary.json") for run in runs]
    first, head = results[0], summaries[0]
    for run, result, summary in zip(runs[1:], results[1:], summaries[1:]):
        for key in ("dataset", "task"):
            if result[key] != first[key]:
                raise StageError(f"{run}: its {key} differs from {runs[0]}'s; merge only runs "
                                 "that differ in their seeds")
        for key in ("reward", "shaping"):
            if summary[key] != head[key]:
                raise StageError(f"{run}: its {key} differs from {runs[0]}'s")
    models = first["models"]
    for run, result in zip(runs[1:], results[1:]):
        if set(result["models"]) != set(models):
            raise StageError(f"{run}: other models than {runs[0]}")
        for name, entry in result["models"].items():
            mine = models[name]["questions"]
            if [q["id"] for q in entry["questions"]] != [q["id"] for q in mine]:
                raise StageError(f"{run}: other questions than {runs[0]} for {name}")
            for q, other in zip(mine, entry["questions"]):
                if set(q["seeds"]) & set(other["seeds"]):
                    raise StageError(f"{run}: seed(s) {sorted(set(q['seeds']) & set(other['seeds']))}"
                                     f" also in an earlier run")
                if set(next(iter(q["seeds"].values()))["trees"]) != \
                        set(next(iter(other["seeds"].values()))["trees"]):
                    raise StageError(f"{run}: other tree settings than {runs[0]}")
                q["seeds"].update(other["seeds"])
    settings = next(iter(head["models"].values()))["settings"]
    grid = [Setting(s["lam"], s["widen_c"], s["widen_alpha"]) for s in settings.values()]
    by_label = {s.label: s for s in grid}
    blind = {by_label[label]: by_label[s["blind_twin"]] for label, s in settings.items()}
    summary = build_summary(models, grid, blind, head["reward"], head["shaping"], resamples)
    out.mkdir(parents=True, exist_ok=True)
    io.append_jsonl(out / "rollouts.jsonl", [line for run in runs
                                             for line in io.read_jsonl(run / "rollouts.jsonl")])
    write_outputs(out, {**first, "models": models, "merged_from": [str(r) for r in runs]},
                  summary, grid)
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("runs", type=Path, nargs="+")
    args = parser.parse_args()
    if (args.out / "rollouts.jsonl").exists():
        raise SystemExit(f"{args.out} already holds a merge; choose an empty folder")
    merge(args.out, args.runs)


if __name__ == "__main__":
    main()
