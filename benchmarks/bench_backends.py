"""00-sample's two backends, same model, same prompts, same sampling config: tokens/s and ratio.

    python benchmarks/bench_backends.py                       # tiny-arith, then a ~100M random Llama
    python benchmarks/bench_backends.py --models tiny-arith --questions 32 --samples 8
    python benchmarks/bench_backends.py --device cuda --dtype bfloat16 --models Qwen/Qwen2.5-Math-1.5B

Run it where vllm is installed (.ci/vllm.sh builds that venv). Per model: the first
--questions arith test questions through 00's prompt code, --samples seeded samples each,
the sampling block below. Sides, interleaved A,B,C,A,B,C over --repeats:
  hf          our loop, in 00's batches (plan_batches with --batch-size)
  vllm        vLLM, handed the same batches (00's loop with backend: vllm)
  vllm-1call  vLLM, every sample in one call (00 with batch_size >= all samples)
Tokens/s counts the response tokens each side generated (lengths differ by side: the
samples differ), over the median wall time. The ratio is vllm's tokens/s over hf's.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import yaml

SECTION = "00_sample"
RANDOM_LLAMA = "random-llama-100m"


def save_random_llama(folder: Path) -> str:
    """A random Llama of about 100M parameters with tiny-arith's tokenizer, saved as a checkpoint."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from rl_onoff.models import load_tokenizer

    tokenizer = load_tokenizer("tiny-arith")
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=768, intermediate_size=2048,
                         num_hidden_layers=14, num_attention_heads=12, num_key_value_heads=12,
                         max_position_embeddings=1024, tie_word_embeddings=True,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    model = LlamaForCausalLM(config).eval()
    print(f"{RANDOM_LLAMA}: {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def build(model: str, args, folder: Path):
    """(stage, hf engine, vllm engine, prompt ids, seeds) for `model`."""
    from rl_onoff.backends import load_backend
    from rl_onoff.config import load_config
    from rl_onoff.generation import sample_seed
    from rl_onoff.stage import Stage

    data = {"defaults": {"model": model, "device": args.device, "dtype": args.dtype,
                         "tracking": {"root": str(folder / "runs")}},
            SECTION: {"dataset": {"num_examples": args.questions},
                      "sampling": {"temperature": 1.0, "max_new_tokens": args.new_tokens},
                      "num_samples": args.samples, "batch_size": args.batch_size,
                      "vllm": {"kv_cache_gb": args.kv_cache_gb} if args.device == "cpu"
                      else {}}}
    path = folder / f"{Path(model).name}.yaml"
    path.write_text(yaml.safe_dump(data))
    stage = Stage("00-sample", SECTION, load_config(path, section=SECTION), output=False)
    records = stage.load_dataset()
    hf, vllm = load_backend("hf", stage), load_backend("vllm", stage)
    records, _, prompt_ids = stage.prompts(records, hf.tokenizer, hf.context_length)
    pairs = [(q, s) for q in range(len(records)) for s in range(args.samples)]
    seeds = {pair: sample_seed(0, records[pair[0]]["id"], pair[1]) for pair in pairs}
    return hf, vllm, prompt_ids, pairs, seeds


def timed_side(engine, batches, prompt_ids, seeds) -> tuple[float, int]:
    """(wall seconds, response tokens) of generating every batch."""
    start, tokens = time.perf_counter(), 0
    for batch in batches:
        generated = engine.generate([prompt_ids[q] for q, _ in batch], [seeds[p] for p in batch])
        tokens += sum(len(g.token_ids) for g in generated)
    return time.perf_counter() - start, tokens


def bench(model: str, args, folder: Path) -> None:
    from rl_onoff.sample.run import plan_batches

    hf, vllm, prompt_ids, pairs, seeds = build(model, args, folder)
    batches = plan_batches(pairs, [len(p) for p in prompt_ids], args.batch_size)
    sides = {"hf": (hf, batches), "vllm": (vllm, batches), "vllm-1call": (vllm, [pairs])}
    timed_side(vllm, [pairs[:8]], prompt_ids, seeds)  # warm-up: first-call setup
    timed_side(hf, [pairs[:8]], prompt_ids, seeds)
    runs = {name: [] for name in sides}
    for _ in range(args.repeats):
        for name, (engine, plan) in sides.items():
            runs[name].append(timed_side(engine, plan, prompt_ids, seeds))
    print(f"\n{model}: {len(pairs)} samples ({args.questions} questions x {args.samples}), "
          f"max_new_tokens {args.new_tokens}, batch_size {args.batch_size}, {args.device} "
          f"{args.dtype}, median of {args.repeats}")
    rate = {}
    for name, times in runs.items():
        wall = statistics.median(w for w, _ in times)
        tokens = statistics.median(t for _, t in times)
        rate[name] = tokens / wall
        print(f"  {name:<11} {wall:8.2f} s  {tokens:7.0f} tokens  {rate[name]:9.1f} tokens/s")
    print(f"  ratio vllm/hf (same batches): {rate['vllm'] / rate['hf']:.2f}; "
          f"vllm one call/hf: {rate['vllm-1call'] / rate['hf']:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["tiny-arith", RANDOM_LLAMA],
                        help=f"model names or paths; {RANDOM_LLAMA}: built here")
    parser.add_argument("--questions", type=int, default=16)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--new-tokens", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--kv-cache-gb", type=float, default=2.0, help="CPU: vLLM's KV cache")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for model in args.models:
            name = save_random_llama(folder / RANDOM_LLAMA) if model == RANDOM_LLAMA else model
            bench(name, args, folder)


if __name__ == "__main__":
    main()
