"""The same 01 job on 1 process and on N (torchrun), timed in one run: speed-up and efficiency.

    python benchmarks/bench_parallel.py [--nproc 2] [--questions 40] [--samples 8] [--repeats 2]

Samples once with 00 (tiny-arith), then scores those responses with 01 alternately on one
process and under `torchrun --standalone --nproc-per-node N` (each process with
OMP_NUM_THREADS=1, so N processes use N cores), and checks that both wrote the same arrays.
Prints wall seconds of each side (medians), the speed-up and its efficiency (speed-up / N).
On a GPU machine run it with --nproc set to the number of GPUs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parent.parent


def write_config(folder: Path, args) -> Path:
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump({
        "defaults": {"tracking": {"root": str(folder / "runs")}},
        "00_sample": {"dataset": {"num_examples": args.questions}, "num_samples": args.samples,
                      "output_dir": str(folder / "00")},
        "01_dist": {"input": str(folder / "00"), "output_dir": str(folder / "01"),
                    "on_config_change": "overwrite"}}))
    return path


def timed(command: list[str], env: dict) -> float:
    start = time.time()
    subprocess.run(command, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return time.time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--questions", type=int, default=40)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    from rl_onoff.distributions import load_distributions

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        config = str(write_config(folder, args))
        subprocess.run([sys.executable, "exp/00-sample.py", "--config", config], cwd=ROOT,
                       env=env, check=True, stdout=subprocess.DEVNULL)
        one = [sys.executable, "exp/01-dist.py", "--config", config]
        many = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                f"--nproc-per-node={args.nproc}", "exp/01-dist.py", "--config", config]
        times = {"1 process": [], f"{args.nproc} processes": []}
        extraction = {name: [] for name in times}  # 01's own timing: scoring, no start-up
        arrays = {}
        for _ in range(args.repeats):  # interleaved, so a busy spell hits both sides
            for name, command in zip(times, (one, many)):
                times[name].append(timed(command, env))
                run = load_distributions(folder / "01")
                arrays[name] = np.array(run.array("entropy"))
                extraction[name].append(run.meta["summary"]["seconds"])
        same = np.array_equal(*arrays.values())
        tokens = load_distributions(folder / "01").meta["num_tokens"]
    print(f"01-dist on {tokens} tokens (tiny-arith, {args.questions} questions x {args.samples} "
          f"samples), medians of {args.repeats}; identical arrays: {same}")
    for label, measured in (("whole command, start-up included", times),
                            ("scoring only (01's own timing)", extraction)):
        single, parallel = (statistics.median(t) for t in measured.values())
        speedup = single / parallel
        print(f"{label}: 1 process {single:.1f} s, {args.nproc} processes {parallel:.1f} s; "
              f"speed-up {speedup:.2f}x, efficiency {speedup / args.nproc:.0%}")


if __name__ == "__main__":
    main()
