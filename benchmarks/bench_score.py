"""Benchmark parallel scoring: items/s of a ScorePool with 1 worker process against 2.

    python benchmarks/bench_score.py [--items 300] [--rounds 2] [--workers 2]

Items are real MATH-test references from ../shared/data, each answered two
ways that math-verify must decide (no string shortcut): right in another form
(`x = <reference>`) and wrong (its first digit changed). Each round times both
pool sizes on the same items, one after the other, with fresh processes whose
startup is excluded (they are warmed first), so the parse caches start empty.
It prints items/s of each and their ratio per round.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import time
from pathlib import Path

from rl_onoff.tasks.rewards import ScorePool

DATA = Path(__file__).resolve().parents[2] / "shared/data/rl_onoff/math/test.parquet"
DIGIT_RE = re.compile(r"\d")


def load_items(count: int, seed: int) -> tuple[list[str], list[str]]:
    """(responses, references): `count` items from count / 2 sampled references with a digit."""
    import pyarrow.parquet as pq

    if not DATA.is_file():
        raise SystemExit(f"no shared data at {DATA}: this benchmark needs ../shared/data beside the checkout")
    rows = pq.read_table(DATA, columns=["reward_model"]).column("reward_model").to_pylist()
    truths = [row["ground_truth"] for row in rows]
    references = [t["target"] if isinstance(t, dict) else t for t in truths]
    references = [r for r in references if r and DIGIT_RE.search(r)]
    chosen = random.Random(seed).sample(references, count // 2)
    responses = [f"\\boxed{{x = {r}}}" for r in chosen]
    responses += [f"\\boxed{{{DIGIT_RE.sub(lambda m: str((int(m.group()) + 1) % 10), r, count=1)}}}"
                  for r in chosen]
    return responses, chosen * 2


def items_per_second(workers: int, responses: list[str], references: list[str]) -> float:
    with ScorePool(workers) as pool:
        pool.submit(["\\boxed{0.5}"] * workers, ["1/2"] * workers).result()  # waits for the startups
        start = time.perf_counter()
        results = pool.submit(responses, references).result()
        seconds = time.perf_counter() - start
    assert len(results) == len(responses)
    return len(responses) / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2, help="the parallel pool's size")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    responses, references = load_items(args.items, args.seed)
    print(f"{len(responses)} items, {os.cpu_count()} CPUs visible")
    for round_index in range(1, args.rounds + 1):
        serial = items_per_second(1, responses, references)
        parallel = items_per_second(args.workers, responses, references)
        print(f"round {round_index}: workers=1 {serial:.1f} items/s, workers={args.workers} "
              f"{parallel:.1f} items/s, ratio {parallel / serial:.2f}x")


if __name__ == "__main__":
    main()
