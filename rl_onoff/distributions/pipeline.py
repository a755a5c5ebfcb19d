"""01-dist: teacher-force 00's sampled responses and record each token's distribution.

Reads 00's results.json, scores the exact token ids 00 sampled (EOS included, no
re-tokenisation) under the model, and writes distributions.json (metadata, the
per-sample index and scalars, the run summary) and distributions.npz (the
per-token arrays; layout in rl_onoff.distributions.store), plus PNG plots.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np

from rl_onoff import io
from rl_onoff.config import Config, ConfigError, DistConfig
from rl_onoff.distributions import gap, store, summary
from rl_onoff.sampling import resolve_path

SECTION = "01_dist"
FORMAT_VERSION = 1
SAMPLE_KEYS = ("text", "finish_reason", "extracted", "reward", "status")
QUESTION_KEYS = ("id", "question", "reference", "metadata", "prompt", "maj_answer", "maj_reward")


def read_results(path: str) -> tuple[Path, dict]:
    """00's results.json, given it or the directory holding it."""
    path = resolve_path(path)
    if path.is_dir():
        path = path / "results.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run exp/00-sample.py first, or set "
                                f"`{SECTION}.input` to 00's output directory or its results.json")
    return path, io.read_json(path)


def with_model(config: Config, results: dict) -> Config:
    """The config with `01_dist.model` resolved: null means the model 00 sampled with."""
    cfg: DistConfig = config[SECTION]
    if cfg.model is not None:
        return config
    sampled_by = results["model"]
    cfg = dataclasses.replace(cfg, model=sampled_by["name"],
                              revision=cfg.revision or sampled_by.get("revision"))
    return dataclasses.replace(config, sections={**config.sections, SECTION: cfg})


def display_strings(tokenizer, ids: list[int]) -> dict[int, str]:
    """How each token reads on screen: its decoded text, spaces and newlines as they are (no
    Ġ/Ċ). A byte-level token holding part of a UTF-8 character shows its bytes as \\xNN."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    byte_of = {char: byte for byte, char in bytes_to_unicode().items()}
    strings = {}
    for token_id, piece in zip(ids, tokenizer.convert_ids_to_tokens(ids)):
        text = tokenizer.decode([token_id], skip_special_tokens=False,
                                clean_up_tokenization_spaces=False)
        if "\ufffd" in text and piece and all(char in byte_of for char in piece):
            text = bytes(byte_of[char] for char in piece).decode("utf-8", "backslashreplace")
        strings[token_id] = text
    return strings


def check_size(specs: dict, cfg: DistConfig, vocab_size: int) -> None:
    """Say how large the NPZ will be; refuse a full distribution above the YAML's limit."""
    size, tokens = store.nbytes(specs), specs["entropy"][1][0]
    print(f"01-dist: {tokens} tokens, vocabulary {vocab_size}; {store.NPZ_NAME} will take "
          f"{_size(size)}")
    if cfg.top_k is None and size > cfg.full_distribution_limit_gb * 1e9:
        raise ConfigError(
            f"{SECTION}.top_k: null stores the full distribution, {tokens} tokens x {vocab_size} "
            f"float32 = {_size(size)}, above {SECTION}.full_distribution_limit_gb "
            f"({cfg.full_distribution_limit_gb}); raise that limit if the disk can take it, "
            "or set top_k to a number")


def _size(nbytes: int) -> str:
    return f"{nbytes / 1e9:.2f} GB" if nbytes >= 1e8 else f"{nbytes / 1e6:.2f} MB"


def run_dist(config: Config) -> dict:
    """Run 01-dist as configured; return the run summary it wrote."""
    from rl_onoff import tracking
    from rl_onoff.decoding import SamplingParams
    from rl_onoff.distributions.extract import check_lm_head
    from rl_onoff.models import describe, load_model

    results_path, results = read_results(config[SECTION].input)
    config = with_model(config, results)
    cfg: DistConfig = config[SECTION]
    out = resolve_path(cfg.output_dir)
    index = [(q, s) for q, question in enumerate(results["questions"])
             for s in range(len(question["samples"]))]
    sequences = [(results["questions"][q]["prompt_token_ids"],
                  results["questions"][q]["samples"][s]["token_ids"]) for q, s in index]
    model, tokenizer = load_model(cfg.model, cfg.device, cfg.dtype, revision=cfg.revision,
                                  trust_remote_code=cfg.trust_remote_code)
    model_info = describe(model, cfg.model)
    vocab_size = model.get_output_embeddings().weight.shape[0]
    _check_token_ids(sequences, vocab_size, cfg.model)
    if cfg.model != results["model"]["name"]:
        print(f"01-dist: scoring {results['model']['name']}'s samples under {cfg.model}")
    lengths = np.array([len(r) for _, r in sequences])
    sampler = gap.sampler_logprobs(results, index, results_path)
    specs = store.array_specs(int(lengths.sum()), cfg.top_k, vocab_size, sampler is not None)
    check_size(specs, cfg, vocab_size)
    check_lm_head(model, min(sequences, key=lambda seq: len(seq[0]) + len(seq[1])))
    g = results["generation"]
    params = SamplingParams(g["temperature"], g["top_p"], g["top_k"], g["min_p"])

    with tracking.start_run("01-dist", config, SECTION, output_dir=out) as run:
        tracking.write_provenance(out, config, SECTION, run, model_info)
        with store.FlatArrays(out, specs) as arrays:
            seconds, seen = _fill(arrays, model, sequences, lengths, vocab_size,
                                  params, cfg, run)
            strings = display_strings(tokenizer, np.flatnonzero(seen).tolist())
            flat = arrays.arrays
            rewards = np.array([results["questions"][q]["samples"][s]["reward"] for q, s in index],
                               dtype=float)
            run_summary = summary.summarize(flat["entropy"], flat["sampled_entropy"],
                                            flat["token_ids"], lengths, rewards, strings,
                                            cfg.forking_quantile, cfg.forking_tokens)
            questions = _questions(results, index, lengths, flat, cfg.high_entropy_top)
            sampler_gap = None
            if sampler is not None:
                flat["sampler_delta"][:] = gap.deltas(sampler, flat["sampled_logprob"])
                sampler_gap = gap.summarize(flat["sampler_delta"], lengths)
            arrays.save(out / store.NPZ_NAME)
        run_summary.update(seconds=seconds, tokens_per_s=int(lengths.sum()) / seconds)
        title = f"{cfg.model} on {results['dataset']['name']}/{results['dataset']['split']}"
        plots = summary.plot(run_summary, out, title)
        if sampler_gap is not None:
            plots["sampler_gap"] = gap.plot(sampler_gap, out / "sampler_gap.png", title)
        io.write_json(out / store.JSON_NAME, {
            "format_version": FORMAT_VERSION, "input": str(results_path), "model": model_info,
            "sampled_by": results["model"], "dataset": results["dataset"], "task": results["task"],
            "generation": g, "sampling_params": params.to_dict(),
            "settings": {k: getattr(cfg, k) for k in ("top_k", "token_budget", "high_entropy_top",
                                                      "forking_quantile", "forking_tokens")},
            "num_tokens": int(lengths.sum()), "vocab_size": vocab_size,
            "arrays": {name: {"dtype": str(dtype), "shape": list(shape)}
                       for name, (dtype, shape) in specs.items()},
            "summary": run_summary, "sampler_gap": sampler_gap,
            "plots": {name: path.name for name, path in plots.items()},
            "questions": questions, "token_strings": {str(i): s for i, s in strings.items()}})
        for name, path in plots.items():
            run.log_image(name, path)
        print(f"01-dist: mean entropy {run_summary['mean_entropy']:.4f} nats (sampled "
              f"distribution {run_summary['mean_sampled_entropy']:.4f}); "
              f"{run_summary['tokens_per_s']:.0f} tokens/s")
        if sampler_gap is not None:
            print(f"01-dist: sampler vs trainer: {gap.headline(sampler_gap)}")
        print(f"wrote {out / store.JSON_NAME}, {out / store.NPZ_NAME} and {len(plots)} plots")
        run.finish(summary={k: v for k, v in run_summary.items() if not isinstance(v, dict)})
    return run_summary


def _check_token_ids(sequences, vocab_size: int, model: str) -> None:
    largest = max(max(p + r) for p, r in sequences)
    if largest >= vocab_size:
        raise ConfigError(f"{SECTION}.model: {model} has {vocab_size} logits but 00 sampled "
                          f"token id {largest}; score 00's samples with a model that shares its "
                          "tokenizer (model: null uses 00's own model)")


def _fill(arrays: store.FlatArrays, model, sequences, lengths, vocab_size: int, params,
          cfg: DistConfig, run):
    """Run the extraction into `arrays`; (seconds taken, which token ids appear anywhere)."""
    from tqdm import tqdm

    from rl_onoff.distributions.extract import extract

    starts = np.cumsum(lengths) - lengths
    arrays.write(np.arange(lengths.sum()),
                 {"token_ids": np.concatenate([r for _, r in sequences]).astype(np.int32)})
    seen = np.full(vocab_size, cfg.top_k is None)
    seen[arrays.arrays["token_ids"]] = True
    bar = tqdm(total=int(lengths.sum()), desc="01-dist", unit="tok")
    start, done = time.time(), 0
    for number, (batch, chunks) in enumerate(extract(model, sequences, params, cfg.top_k,
                                                     cfg.token_budget)):
        rows = np.concatenate([np.arange(starts[i], starts[i] + lengths[i]) for i in batch])
        for offset, stats in chunks:
            arrays.write(rows[offset:offset + len(stats["entropy"])], stats)
            if "topk_ids" in stats:
                seen[stats["topk_ids"]] = True
            bar.update(len(stats["entropy"]))
        done += len(rows)
        run.log({"batch": number, "tokens_done": done,
                 "tokens_per_s": done / (time.time() - start)})
    bar.close()
    return time.time() - start, seen


def _questions(results, index, lengths, flat, top: int) -> list[dict]:
    """Per question its metadata; per sample its rows in the arrays, 00's outcome and scalars."""
    questions = [{k: q.get(k) for k in QUESTION_KEYS} | {"samples": []}
                 for q in results["questions"]]
    start = 0
    for (q, s), length in zip(index, lengths.tolist()):
        rows = slice(start, start + length)
        sample = results["questions"][q]["samples"][s]
        questions[q]["samples"].append(
            {"start": start, "length": length, **{k: sample[k] for k in SAMPLE_KEYS},
             **summary.sample_scalars(flat["entropy"][rows], flat["sampled_entropy"][rows],
                                      flat["logprob"][rows], top)})
        start += length
    return questions
