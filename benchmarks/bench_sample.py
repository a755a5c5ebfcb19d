"""00-sample's generation loop, measured side by side in one run (sides interleaved A,B,A,B).

    python benchmarks/bench_sample.py                        # all three sections, CPU
    python benchmarks/bench_sample.py --sections mixed --mixed-prompts 32 --mixed-max 192
    python benchmarks/bench_sample.py --sections loop --random-qwen --device cuda --dtype bfloat16

Sections:
  sampler  the per-row random streams (rl_onoff.generation.sample_rows: a counter-based
           uniform per row, inverse CDF) against one batch stream (decoding.sample_next:
           torch.multinomial with one generator), on random logits (batch x vocab).
  loop     our loop against a bare `model.generate`, same prompts, batch, sampling settings
           and token counts (EOS disabled: every row runs to --new-tokens). Goal: ratio >= 0.9.
  mixed    mixed response lengths: a random Llama of about 50M parameters built in code,
           --mixed-prompts prompts, EOS made likely enough (a logit bias) that the median
           response has about --mixed-median tokens, capped at --mixed-max. Our loop with
           finished rows dropped from the batch against the same loop keeping them until
           the longest row ends; both draw the same tokens (checked), so useful tokens/s
           (tokens of the responses, per second) compare directly.
Each side reports the median wall time and the median CPU time (all threads) of its repeats.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from typing import Callable

import torch


def random_qwen(device: str, dtype):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(vocab_size=151_936, hidden_size=1536, intermediate_size=8960,
                         num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2,
                         max_position_embeddings=4096, tie_word_embeddings=True)
    with torch.device(device):
        model = Qwen2ForCausalLM(config).to(dtype)
    return model.eval()


def random_llama_50m(device: str):
    """A random Llama of about 50M parameters (vocab 32k, hidden 512, 6 layers), fp32."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=32_000, hidden_size=512, intermediate_size=1536,
                         num_hidden_layers=6, num_attention_heads=8, num_key_value_heads=8,
                         max_position_embeddings=2048, tie_word_embeddings=False,
                         pad_token_id=0, eos_token_id=2)
    with torch.device(device):
        return LlamaForCausalLM(config).eval()


def interleaved(sides: dict[str, Callable[[], None]], repeats: int,
                device: str) -> dict[str, list[tuple[float, float]]]:
    """(wall s, CPU s) of each side per repeat, the sides run in turn A,B,A,B,..."""
    times = {name: [] for name in sides}
    for _ in range(repeats):
        for name, fn in sides.items():
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            wall, cpu = time.perf_counter(), time.process_time()
            fn()
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            times[name].append((time.perf_counter() - wall, time.process_time() - cpu))
    return times


def report(times: dict[str, list[tuple[float, float]]], work: float, unit: str) -> None:
    """Per side: `work` per median second (wall and CPU); then the ratios of the first side to
    the others (> 1: the first side is faster)."""
    medians = {name: (statistics.median(w for w, _ in t), statistics.median(c for _, c in t))
               for name, t in times.items()}
    for name, (wall, cpu) in medians.items():
        print(f"  {name:<34} wall {wall:8.3f} s ({work / wall:9.1f} {unit}/s)   "
              f"CPU {cpu:8.3f} s ({work / cpu:9.1f} {unit}/CPU-s)")
    first, *others = medians
    for name in others:
        print(f"  speed ratio {first} / {name}: wall {medians[name][0] / medians[first][0]:.3f}, "
              f"CPU {medians[name][1] / medians[first][1]:.3f}")


def bench_sampler(args, device: str) -> None:
    from rl_onoff.decoding import SamplingParams, sample_next
    from rl_onoff.generation import sample_rows

    logits = torch.randn(args.batch, args.vocab, generator=torch.Generator().manual_seed(0),
                         ).mul_(3).to(device)
    seeds = torch.arange(args.batch)  # sample_rows hashes seeds on the CPU
    for params in (SamplingParams(), SamplingParams(temperature=0.6, top_p=0.95)):
        generator = torch.Generator(device=device).manual_seed(0)
        steps = iter(range(10**9))
        times = interleaved({
            "per-row streams (inverse CDF)": lambda: sample_rows(logits, params, seeds, next(steps)),
            "one batch stream (multinomial)": lambda: sample_next(logits, params, generator),
        }, args.repeats * 5, device)
        print(f"sampler: {args.batch} x {args.vocab} logits, {params}, "
              f"{args.repeats * 5} interleaved repeats")
        report(times, args.batch, "tokens")


def bench_loop(args, device: str) -> None:
    from transformers import GenerationConfig

    from rl_onoff.data import load_dataset
    from rl_onoff.decoding import SamplingParams
    from rl_onoff.generation import generate
    from rl_onoff.models import load_model, resolve_dtype
    from rl_onoff.tasks import build_prompt, encode_prompt

    model, tokenizer = load_model("tiny-arith" if args.random_qwen else args.model, device,
                                  args.dtype)
    if args.random_qwen:
        model = random_qwen(device, resolve_dtype(args.dtype, device))
    records = load_dataset("arith", "test", args.batch)
    prompts = [encode_prompt(build_prompt(r["question"], tokenizer), tokenizer, "auto")
               for r in records]
    params = SamplingParams(temperature=1.0, top_p=0.95)
    pad = tokenizer.pad_token_id
    width = max(map(len, prompts))
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=device)
    mask = (torch.arange(width, device=device)[None, :] >=
            torch.tensor([width - len(p) for p in prompts], device=device)[:, None]).long()
    bare_config = GenerationConfig(do_sample=True, temperature=1.0, top_p=0.95, top_k=0,
                                   max_new_tokens=args.new_tokens,
                                   min_new_tokens=args.new_tokens, pad_token_id=pad)

    def ours():
        generate(model, tokenizer, prompts, params, args.new_tokens, eos_ids=[],
                 seeds=list(range(len(prompts))))

    def bare():
        with torch.inference_mode():
            model.generate(input_ids=ids, attention_mask=mask, generation_config=bare_config)

    ours(), bare()  # warm-up
    times = interleaved({"00-sample generation": ours, "bare model.generate": bare},
                        args.repeats, device)
    name = "random Qwen2-1.5B-shaped" if args.random_qwen else args.model
    print(f"loop: {name}, device {device}, dtype {next(model.parameters()).dtype}, "
          f"batch {args.batch}, {args.new_tokens} new tokens, {args.repeats} interleaved repeats "
          "(goal: ratio >= 0.9)")
    report(times, args.batch * args.new_tokens, "tokens")


def eos_bias_for_median(model, prompts: list[list[int]], eos: int, median: float) -> float:
    """The logit bias that makes EOS's probability about ln 2 / median per step (so response
    lengths are roughly geometric with that median), from the prompts' last-token logits."""
    from rl_onoff.generation import left_pad, positions

    ids, mask = left_pad(prompts, 0, model.device)
    with torch.inference_mode():
        logits = model(input_ids=ids, attention_mask=mask, position_ids=positions(mask),
                       logits_to_keep=1).logits[:, -1].float()
    others = logits.clone()
    others[:, eos] = float("-inf")
    p = math.log(2) / median
    # e^(l_eos + b) / (e^(l_eos + b) + sum_others) = p
    return (math.log(p / (1 - p)) + others.logsumexp(-1) - logits[:, eos]).median().item()


def bench_mixed(args, device: str) -> None:
    from rl_onoff.decoding import SamplingParams
    from rl_onoff.generation import generate

    model = random_llama_50m(device)
    size = sum(p.numel() for p in model.parameters())
    rng = torch.Generator().manual_seed(1)
    prompts = [torch.randint(3, 32_000, (int(n),), generator=rng).tolist()
               for n in torch.randint(16, 65, (args.mixed_prompts,), generator=rng)]
    eos = model.config.eos_token_id
    bias = eos_bias_for_median(model, prompts, eos, args.mixed_median)

    def add_eos_bias(_module, _inputs, logits):
        logits[..., eos] += bias
        return logits

    model.lm_head.register_forward_hook(add_eos_bias)
    tokenizer = type("PadOnly", (), {"pad_token_id": 0})()
    seeds = list(range(len(prompts)))
    results = {}

    def run(drop: bool):
        results[drop] = generate(model, tokenizer, prompts, SamplingParams(), args.mixed_max,
                                 eos_ids=[eos], seeds=seeds, drop_finished=drop)

    times = interleaved({"finished rows dropped": lambda: run(True),
                         "finished rows kept (static batch)": lambda: run(False)},
                        args.repeats, device)
    same = [g.token_ids for g in results[True]] == [g.token_ids for g in results[False]]
    lengths = sorted(len(g.token_ids) for g in results[True])
    useful = sum(lengths)
    print(f"mixed: random Llama {size / 1e6:.0f}M params, device {device}, fp32, "
          f"{len(prompts)} prompts, lengths median {statistics.median(lengths):.0f} max "
          f"{lengths[-1]} (cap {args.mixed_max}), {useful} useful tokens, "
          f"{len(prompts) * lengths[-1]} row-steps in a static batch; "
          f"{args.repeats} interleaved repeats; same tokens both ways: {same}")
    report(times, useful, "useful tokens")


def main() -> None:
    from rl_onoff.models import resolve_device

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", default="sampler,loop,mixed")
    parser.add_argument("--model", default="tiny-arith")
    parser.add_argument("--random-qwen", action="store_true")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=96)
    parser.add_argument("--vocab", type=int, default=151_936, help="sampler section's vocab")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--mixed-prompts", type=int, default=64)
    parser.add_argument("--mixed-median", type=float, default=100)
    parser.add_argument("--mixed-max", type=int, default=384)
    args = parser.parse_args()
    device = resolve_device(args.device)
    sections = {"sampler": bench_sampler, "loop": bench_loop, "mixed": bench_mixed}
    for name in args.sections.split(","):
        if name not in sections:
            parser.error(f"--sections: unknown section {name!r}; choose from {', '.join(sections)}")
        sections[name](args, device)


if __name__ == "__main__":
    main()
