"""04-proto speed: (1) texts optimised one at a time against the same texts as one batch;
(2) emitting a text in one forward pass (one_step: [e, m, ..., m]) against greedy
autoregressive decoding of as many tokens from one [mem] vector (KV cache).

    python benchmarks/bench_proto.py [--model tiny-arith] [--texts 8] [--steps 50]
                                     [--lengths 16 32 64] [--repeats 20]

(1) prints optimiser steps per second and text-steps per second for both, and their
ratio; early stopping is off (patience null; targets are long random-digit strings
nobody reconstructs in `steps`), so both do exactly texts x steps of work.
(2) prints the median wall time of each way per length (one text, the two timed in
alternation) and their ratio; random vectors, since the time does not depend on them.
"""

import argparse
import random
import statistics
import time
from functools import partial

import torch

from rl_onoff.models import load_model
from rl_onoff.proto.evaluate import greedy_from_memory
from rl_onoff.proto.method import forward
from rl_onoff.proto.optimize import Settings, initial_vectors, optimise


def batching(model, tokenizer, args) -> None:
    rng = random.Random(0)
    targets = [tokenizer(" ".join(str(rng.randrange(10)) for _ in range(args.length)),
                         add_special_tokens=False)["input_ids"][:args.length]
               for _ in range(args.texts)]
    settings = Settings(steps=args.steps, patience=None)
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
    print(f"(1) {args.model}, {args.texts} texts x {args.length} tokens, {args.steps} steps each")
    print(f"one at a time: {alone:7.2f} s  {work / alone:8.1f} text-steps/s")
    print(f"one batch:     {batched:7.2f} s  {work / batched:8.1f} text-steps/s")
    print(f"batch speed-up: {alone / batched:.2f}x")


@torch.no_grad()
def generation(model, args) -> None:
    d = model.get_input_embeddings().weight.shape[1]
    device = next(model.parameters()).device
    e, m = torch.randn(1, d, device=device), torch.randn(1, d, device=device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def timed(fn) -> float:
        sync()
        start = time.perf_counter()
        fn()
        sync()
        return time.perf_counter() - start

    print(f"(2) {args.model}, one text, median of {args.repeats} alternating runs each")
    print(f"{'tokens':>6}  {'one pass (ms)':>13}  {'autoregressive (ms)':>19}  ratio")
    for n in args.lengths:
        ids = torch.zeros((1, n), dtype=torch.long, device=device)
        one = partial(forward, model, e, m, ids, "one_step", "e_m")   # argmax is negligible
        auto = partial(greedy_from_memory, model, e, n, None)
        one(), auto()                                                          # warm-up
        times = {"one": [], "auto": []}
        for _ in range(args.repeats):
            times["one"].append(timed(one))
            times["auto"].append(timed(auto))
        a, b = statistics.median(times["one"]), statistics.median(times["auto"])
        print(f"{n:>6}  {a * 1e3:13.2f}  {b * 1e3:19.2f}  {b / a:5.1f}x")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="tiny-arith")
    p.add_argument("--device", default="auto")
    p.add_argument("--texts", type=int, default=8)
    p.add_argument("--length", type=int, default=40, help="tokens per target in (1)")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--lengths", type=int, nargs="+", default=[16, 32, 64],
                   help="text lengths in (2)")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--only", choices=["batching", "generation"], default=None)
    args = p.parse_args()
    model, tokenizer = load_model(args.model, args.device)
    model.requires_grad_(False)
    if args.only != "generation":
        batching(model, tokenizer, args)
    if args.only != "batching":
        generation(model, args)


if __name__ == "__main__":
    main()
