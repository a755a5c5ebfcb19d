"""00-sample's generation loop, measured side by side in one run (sides interleaved A,B,A,B).

    python benchmarks/bench_sample.py                        # all three sections, CPU
    python benchmarks/bench_sample.py --sections mixed --mixed-prompts 32 --mixed-max 192
    python benchmarks/bench_sample.py --sections loop --random-qwen --device cuda --dtype bfloat16
    python benchmarks/bench_sample.py --sections mixed --mixed-vllm   # in vLLM's venv (.ci/vllm.sh)

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
           the longest row ends; both draw the same tokens (the identical rows are
           counted: on a flat random model fp32 rounding that moves with the batch's size
           can move a draw), so useful tokens/s (response tokens per second) compare. --mixed-vllm adds
           vLLM's engine as a third side (run it where vllm is installed): the same
           weights (saved to a temporary folder), prompts, seeds, EOS, cap and bias (a
           vLLM logits processor adding the same constant to the EOS logit), default
           engine (its own worker process, prefix caching on, chunked prefill off as
           00 sets it on a CPU). Its samples are its own (another random stream), so its
           length distribution is printed beside ours.
Each side reports the median wall time and the median CPU time (all threads, and child
processes such as vLLM's engine) of its repeats.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import tempfile
import time
from typing import Callable

import psutil
import torch

EOS_BIAS_ENV = "BENCH_SAMPLE_EOS_BIAS"  # "eos_id bias": read by vLLM's engine process

try:  # vLLM's engine process unpickles the processor class from here: it must be top level
    from vllm.v1.sample.logits_processor import LogitsProcessor
except ImportError:
    LogitsProcessor = None
else:
    class EosBias(LogitsProcessor):
        """Adds the bias in $BENCH_SAMPLE_EOS_BIAS to the EOS logit, as the HF side's hook does."""

        def __init__(self, vllm_config, device, is_pin_memory):
            eos, bias = os.environ[EOS_BIAS_ENV].split()
            self.eos, self.bias = int(eos), float(bias)

        def is_argmax_invariant(self) -> bool:
            return False

        def update_state(self, batch_update) -> None:
            pass

        def apply(self, logits: torch.Tensor) -> torch.Tensor:
            logits[:, self.eos] += self.bias
            return logits


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
            wall, cpu = time.perf_counter(), cpu_seconds()
            fn()
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            times[name].append((time.perf_counter() - wall, cpu_seconds() - cpu))
    return times


def cpu_seconds() -> float:
    """CPU seconds (user + system) of this process and its live child processes."""
    me = psutil.Process()
    total = 0.0
    for process in [me, *me.children(recursive=True)]:
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def report(times: dict[str, list[tuple[float, float]]], work: float | dict[str, float],
           unit: str) -> None:
    """Per side: its `work` (one number, or one per side) per median second, wall and CPU;
    then the first side's rate over each other's (> 1: the first side is faster)."""
    rates = {}
    for name, t in times.items():
        done = work[name] if isinstance(work, dict) else work
        wall, cpu = statistics.median(w for w, _ in t), statistics.median(c for _, c in t)
        rates[name] = (done / wall, done / cpu)
        print(f"  {name:<34} wall {wall:8.3f} s ({rates[name][0]:9.1f} {unit}/s)   "
              f"CPU {cpu:8.3f} s ({rates[name][1]:9.1f} {unit}/CPU-s)")
    first, *others = rates
    for name in others:
        print(f"  speed ratio {first} / {name}: wall {rates[first][0] / rates[name][0]:.3f}, "
              f"CPU {rates[first][1] / rates[name][1]:.3f}")


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
    seeds = list(range(len(prompts)))
    with tempfile.TemporaryDirectory() as folder:
        vllm_side = vllm_mixed_side(model, folder, prompts, seeds, eos, bias, args, device) \
            if args.mixed_vllm else None

        def add_eos_bias(_module, _inputs, logits):
            logits[..., eos] += bias
            return logits

        model.lm_head.register_forward_hook(add_eos_bias)
        tokenizer = type("PadOnly", (), {"pad_token_id": 0})()
        results = {}

        def run(drop: bool, count: int = len(prompts), cap: int = args.mixed_max):
            results[drop] = generate(model, tokenizer, prompts[:count], SamplingParams(), cap,
                                     eos_ids=[eos], seeds=seeds[:count], drop_finished=drop)
            return [g.token_ids for g in results[drop]]

        sides = {"HF loop, finished rows dropped": lambda: run(True),
                 "HF loop, finished rows kept": lambda: run(False)}
        run(True, 4, 8)  # warm-up
        if vllm_side is not None:
            vllm_side(4, 8)
            sides["vLLM (CPU build)"] = vllm_side
        outputs = {}

        def keep(name, fn):
            return lambda: outputs.__setitem__(name, fn())

        times = interleaved({name: keep(name, fn) for name, fn in sides.items()},
                            args.repeats, device)
    names = list(sides)
    same = sum(a == b for a, b in zip(outputs[names[0]], outputs[names[1]]))
    print(f"mixed: random Llama {size / 1e6:.0f}M params, device {device}, fp32, "
          f"{torch.get_num_threads()} torch threads, {len(prompts)} prompts, EOS bias "
          f"{bias:.2f} (aimed at median {args.mixed_median:g}), cap {args.mixed_max}; "
          f"{args.repeats} interleaved repeats; rows the two HF sides drew identically: "
          f"{same}/{len(prompts)} (a flat random model: the batch's size moves fp32 logits by "
          "~1e-6, which now and then moves a draw across a token's tiny CDF interval)")
    for name in names:
        lengths = sorted(map(len, outputs[name]))
        print(f"  lengths, {name:<31} median {statistics.median(lengths):5.0f}  mean "
              f"{statistics.mean(lengths):6.1f}  p90 {lengths[int(0.9 * len(lengths))]:4d}  "
              f"max {lengths[-1]:4d}  at cap {sum(n == args.mixed_max for n in lengths):3d}  "
              f"useful tokens {sum(lengths)}")
    report(times, {name: sum(map(len, outputs[name])) for name in names},
                    "useful tokens")


def vllm_mixed_side(model, folder: str, prompts, seeds, eos: int, bias: float, args,
                    device: str) -> Callable[..., list[list[int]]]:
    """A function (count, cap) -> token ids that runs the first `count` prompts through vLLM,
    on `model`'s weights saved to `folder`, with `bias` added to the EOS logit."""
    if LogitsProcessor is None:
        raise SystemExit("--mixed-vllm needs vllm: run this in vLLM's venv (.ci/vllm.sh)")
    import vllm

    from rl_onoff.backends.vllm_config import VLLMConfig

    model.save_pretrained(folder)
    os.environ[EOS_BIAS_ENV] = f"{eos} {bias!r}"
    engine = VLLMConfig(kv_cache_gb=args.kv_cache_gb, enforce_eager=args.vllm_eager)
    llm = vllm.LLM(model=folder, dtype="float32", seed=0, skip_tokenizer_init=True,
                   generation_config="vllm", logits_processors=[EosBias],
                   **engine.engine_kwargs(device))

    def run(count: int = len(prompts), cap: int = args.mixed_max) -> list[list[int]]:
        params = [vllm.SamplingParams(n=1, temperature=1.0, seed=seed, max_tokens=cap,
                                      stop_token_ids=[eos], detokenize=False)
                  for seed in seeds[:count]]
        requests = [vllm.inputs.TokensPrompt(prompt_token_ids=p) for p in prompts[:count]]
        return [list(r.outputs[0].token_ids)
                for r in llm.generate(requests, params, use_tqdm=False)]

    return run


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
    parser.add_argument("--mixed-vllm", action="store_true", help="add vLLM as a side (mixed)")
    parser.add_argument("--vllm-eager", action="store_true", help="vLLM without compilation")
    parser.add_argument("--kv-cache-gb", type=float, default=2.0, help="vLLM's KV cache (CPU)")
    args = parser.parse_args()
    device = resolve_device(args.device)
    sections = {"sampler": bench_sampler, "loop": bench_loop, "mixed": bench_mixed}
    for name in args.sections.split(","):
        if name not in sections:
            parser.error(f"--sections: unknown section {name!r}; choose from {', '.join(sections)}")
        sections[name](args, device)


if __name__ == "__main__":
    main()
