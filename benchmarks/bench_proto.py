"""04-proto speed: texts optimised one at a time against the same texts as one batch.

    python benchmarks/bench_proto.py [--model tiny-arith] [--texts 8] [--steps 50]

Prints optimiser steps per second and text-steps per second for both, and their
ratio. Early stopping is off (targets are long random-digit strings nobody
reconstructs in `steps`), so both do exactly texts x steps of work.
"""

import argparse
import random
import time

from rl_onoff.models import load_model
from rl_onoff.proto.optimize import Settings, initial_vectors, optimise


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="tiny-arith")
    p.add_argument("--device", default="auto")
    p.add_argument("--texts", type=int, default=8)
    p.add_argument("--length", type=int, default=40, help="tokens per target")
    p.add_argument("--steps", type=int, default=50)
    args = p.parse_args()
    model, tokenizer = load_model(args.model, args.device)
    model.requires_grad_(False)
    rng = random.Random(0)
    targets = [tokenizer(" ".join(str(rng.randrange(10)) for _ in range(args.length)),
                         add_special_tokens=False)["input_ids"][:args.length]
               for _ in range(args.texts)]
    settings = Settings(steps=args.steps)
    e0, m0 = initial_vectors(model, settings, list(range(args.texts)), 0, 0)
    optimise(model, targets[:1], e0[:1], m0[:1], Settings(steps=3))   # warm-up

    start = time.perf_counter()
    for i in range(args.texts):
        optimise(model, targets[i:i + 1], e0[i:i + 1], m0[i:i + 1], settings)
    alone = time.perf_counter() - start
    start = time.perf_counter()
    optimise(model, targets, e0, m0, settings)
    batched = time.perf_counter() - start

    work = args.texts * args.steps
    print(f"{args.model}, {args.texts} texts x {args.length} tokens, {args.steps} steps each")
    print(f"one at a time: {alone:7.2f} s  {work / alone:8.1f} text-steps/s")
    print(f"one batch:     {batched:7.2f} s  {work / batched:8.1f} text-steps/s")
    print(f"batch speed-up: {alone / batched:.2f}x")


if __name__ == "__main__":
    main()
