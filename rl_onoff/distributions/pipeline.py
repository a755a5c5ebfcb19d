"""01-dist: teacher-force 00's sampled responses and record each token's distribution.

Reads 00's results.json, scores the exact token ids 00 sampled (EOS included, no
re-tokenisation) under the model, and writes distributions.json (metadata, the
per-sample index and scalars, the run summary) and distributions.npz (the
per-token arrays; layout in rl_onoff.distributions.store), plus PNG plots.

Under torchrun each rank scores every world-th response into its own shard
(`shard-<rank>-of-<world>.npz`, kept until the run ends, so a killed run resumes
shard by shard); rank 0 merges them into exactly the arrays one process writes.
"""

from __future__ import annotations

import hashlib
import shutil
import time
from pathlib import Path

import numpy as np

from rl_onoff import io
from rl_onoff.config import Config, ConfigError
from rl_onoff.distributions import gap, store, summary
from rl_onoff.distributions.config import DistConfig

SECTION, SCRIPT = "01_dist", "01-dist"
FORMAT_VERSION = 1
SAMPLE_KEYS = ("text", "finish_reason", "extracted", "reward", "status")
QUESTION_KEYS = ("id", "question", "reference", "metadata", "prompt", "maj_answer", "maj_reward")


def with_model(config: Config, results: dict) -> Config:
    """The config with `01_dist.model` resolved: null means the model 00 sampled with."""
    cfg = config[SECTION]
    if cfg.model is not None:
        return config
    sampled_by = results["model"]
    return config.replace(SECTION, model=sampled_by["name"],
                          revision=cfg.revision or sampled_by.get("revision"))


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
    from rl_onoff.sample.results import load_results, results_file
    from rl_onoff.stage import Stage

    results_path = results_file(config.resolve(config[SECTION].input))
    results = load_results(results_path, f"{SECTION}.input")
    with Stage(SCRIPT, SECTION, with_model(config, results)) as stage:
        return _dist(stage, results, results_path)


def _dist(stage, results: dict, results_path: Path) -> dict:
    from rl_onoff.decoding import SamplingParams
    from rl_onoff.distributions.extract import check_lm_head

    cfg: DistConfig = stage.cfg
    index = [(q, s) for q, question in enumerate(results["questions"])
             for s in range(len(question["samples"]))]
    sequences = [(results["questions"][q]["prompt_token_ids"],
                  results["questions"][q]["samples"][s]["token_ids"]) for q, s in index]
    model, tokenizer = stage.load_model()
    vocab_size = model.get_output_embeddings().weight.shape[0]
    _check_token_ids(sequences, vocab_size, cfg.model)
    if cfg.model != results["model"]["name"] and stage.ranks.main:
        print(f"01-dist: scoring {results['model']['name']}'s samples under {cfg.model}")
    lengths = np.array([len(r) for _, r in sequences])
    sampler = gap.sampler_logprobs(results, index, results_path)
    specs = store.array_specs(int(lengths.sum()), cfg.top_k, vocab_size, sampler is not None)
    if stage.ranks.main:
        check_size(specs, cfg, vocab_size)
        for stale in stage.out.glob(".01-dist-scratch-*"):  # a killed run's; we hold the lock
            shutil.rmtree(stale, ignore_errors=True)
    check_lm_head(model, min(sequences, key=lambda seq: len(seq[0]) + len(seq[1])))
    out = stage.claim(extra={"input_sha256": _sha256(results_path)})
    g = results["generation"]
    params = SamplingParams(g["temperature"], g["top_p"], g["top_k"], g["min_p"])
    filled = _fill_sharded if stage.ranks.parallel else _fill_all
    with store.FlatArrays(out, specs if stage.ranks.main else {}) as arrays:
        seconds = filled(stage, arrays, model, sequences, lengths, specs, params)
        if not stage.ranks.main:
            return {}
        flat = arrays.arrays
        seen = np.full(vocab_size, cfg.top_k is None)
        seen[flat["token_ids"]] = True
        if "topk_ids" in flat:
            seen[np.unique(flat["topk_ids"])] = True
        strings = display_strings(tokenizer, np.flatnonzero(seen).tolist())
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
    for shard in out.glob("shard-*.npz"):
        shard.unlink()
    run_summary.update(seconds=seconds, tokens_per_s=int(lengths.sum()) / seconds)
    title = f"{cfg.model} on {results['dataset']['name']}/{results['dataset']['split']}"
    plots = summary.plot(run_summary, out, title)
    if sampler_gap is not None:
        plots["sampler_gap"] = gap.plot(sampler_gap, out / "sampler_gap.png", title)
    io.write_json(out / store.JSON_NAME, {
        "format_version": FORMAT_VERSION, "input": str(results_path), "model": stage.model_info,
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
        stage.run.log_image(name, path)
    print(f"01-dist: mean entropy {run_summary['mean_entropy']:.4f} nats (sampled "
          f"distribution {run_summary['mean_sampled_entropy']:.4f}); "
          f"{run_summary['tokens_per_s']:.0f} tokens/s")
    if sampler_gap is not None:
        print(f"01-dist: sampler vs trainer: {gap.headline(sampler_gap)}")
    print(f"wrote {out / store.JSON_NAME}, {out / store.NPZ_NAME} and {len(plots)} plots")
    stage.finish(summary={k: v for k, v in run_summary.items() if not isinstance(v, dict)})
    return run_summary


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def _check_token_ids(sequences, vocab_size: int, model: str) -> None:
    largest = max(max(p + r) for p, r in sequences)
    if largest >= vocab_size:
        raise ConfigError(f"{SECTION}.model: {model} has {vocab_size} logits but 00 sampled "
                          f"token id {largest}; score 00's samples with a model that shares its "
                          "tokenizer (model: null uses 00's own model)")


def _fill_all(stage, arrays: store.FlatArrays, model, sequences, lengths, specs, params
              ) -> float:
    """One process: every response straight into the final arrays; the seconds it took."""
    return _extract(stage, arrays, model, sequences, lengths, range(len(sequences)), params)


def _fill_sharded(stage, arrays: store.FlatArrays, model, sequences, lengths, specs, params
                  ) -> float:
    """torchrun: this rank's responses into its shard file (skipped when a killed run left it
    whole), then rank 0 copies every shard's rows into `arrays`."""
    ranks, out = stage.ranks, stage.out
    mine = ranks.shard(range(len(sequences)))
    path = out / f"shard-{ranks.rank}-of-{ranks.world}.npz"
    seconds = 0.0
    if not path.is_file():
        shard_specs = {name: (dtype, (int(lengths[mine].sum()), *shape[1:]))
                       for name, (dtype, shape) in specs.items()}
        with store.FlatArrays(out, shard_specs) as shard:
            seconds = _extract(stage, shard, model, sequences, lengths, mine, params)
            shard.save(path)
    ranks.barrier()
    seconds = max(ranks.gather(seconds))
    if ranks.main:
        starts = np.cumsum(lengths) - lengths
        for rank in range(ranks.world):
            theirs = list(range(len(sequences)))[rank::ranks.world]
            rows = _rows(starts, lengths, theirs)
            members = store.npz_members(out / f"shard-{rank}-of-{ranks.world}.npz")
            for name, (offset, dtype, shape, fortran) in members.items():
                data = np.memmap(out / f"shard-{rank}-of-{ranks.world}.npz", dtype=dtype,
                                 mode="r", offset=offset, shape=shape,
                                 order="F" if fortran else "C")
                arrays.arrays[name][rows] = data
    ranks.barrier()
    return seconds


def _rows(starts, lengths, ids) -> np.ndarray:
    """The flat token rows of the responses `ids`, in that order."""
    if not len(ids):
        return np.zeros(0, dtype=np.int64)
    return np.concatenate([np.arange(starts[i], starts[i] + lengths[i]) for i in ids])


def _extract(stage, arrays: store.FlatArrays, model, sequences, lengths, ids, params) -> float:
    """Teacher-force the responses `ids` into `arrays`, whose rows are theirs in that order."""
    from tqdm import tqdm

    from rl_onoff.distributions.extract import extract

    cfg = stage.cfg
    ids = list(ids)
    local_lengths = lengths[ids]
    starts = np.cumsum(local_lengths) - local_lengths
    if not ids:
        return 0.0
    arrays.write(np.arange(local_lengths.sum()),
                 {"token_ids": np.concatenate([sequences[i][1] for i in ids]).astype(np.int32)})
    bar = tqdm(total=int(local_lengths.sum()), desc=SCRIPT, unit="tok",
               disable=not stage.ranks.main)
    start, done = time.time(), 0
    for number, (batch, chunks) in enumerate(extract(model, [sequences[i] for i in ids], params,
                                                     cfg.top_k, cfg.token_budget)):
        rows = _rows(starts, local_lengths, batch)
        for offset, stats in chunks:
            arrays.write(rows[offset:offset + len(stats["entropy"])], stats)
            bar.update(len(stats["entropy"]))
        done += len(rows)
        stage.run.log({"batch": number, "tokens_done": done,
                       "tokens_per_s": done / (time.time() - start)})
    bar.close()
    return time.time() - start


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
