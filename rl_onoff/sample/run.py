"""00-sample: sample responses to dataset questions, score them, write statistics.

A sample's tokens depend only on (seed, question id, sample index), the model and
the sampling config (each row of a batch draws from its own random stream), so the
work can be cut into batches and processes any way: pending (question, sample) pairs
are batched by prompt length, and every finished batch is appended to `progress.jsonl`
(under torchrun each rank takes every world-th question and appends to its own
`progress.rank<R>.jsonl`; rank 0 merges). A
restarted run skips what is there and ends with exactly the samples an
uninterrupted run gives; raising `num_samples` or `num_examples` keeps the samples
already drawn. Scoring runs in worker processes while the next batch generates.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

from rl_onoff import io
from rl_onoff.config import Config
from rl_onoff.sample.config import SampleConfig
from rl_onoff.sample.results import RESULTS, STATISTICS

SECTION, SCRIPT = "00_sample", "00-sample"
PROGRESS = "progress.jsonl"
METADATA_KEYS = ("level", "subject", "source")
BOOKKEEPING = ("qid", "s", "seconds")


def plan_batches(pending: list[tuple[int, int]], prompt_lengths: list[int],
                 batch_size: int) -> list[list[tuple[int, int]]]:
    """Batches of (question, sample) pairs, by prompt length so that a batch pads little."""
    order = sorted(pending, key=lambda pair: (prompt_lengths[pair[0]], pair))
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def run_sample(config: Config) -> dict:
    """Run 00-sample as configured; return the statistics it wrote."""
    from rl_onoff.stage import Stage

    with Stage(SCRIPT, SECTION, config) as stage:
        return _sample(stage)


def _sample(stage) -> dict:
    from tqdm import tqdm

    from rl_onoff import stats
    from rl_onoff.backends import load_backend
    from rl_onoff.generation import sample_seed
    from rl_onoff.tasks.rewards import ScorePool

    cfg: SampleConfig = stage.cfg
    started = time.time()
    records = stage.load_dataset()
    engine = load_backend(cfg.backend, stage)
    tokenizer = engine.tokenizer
    records, prompts, prompt_ids = stage.prompts(records, tokenizer, engine.context_length)
    out = stage.claim()
    load_seconds = time.time() - started
    ranks = stage.ranks
    done = {(line["qid"], line["s"]): line for line in _read_progress(out)}
    mine = ranks.shard(range(len(records)))
    pending = [(q, s) for q in mine for s in range(cfg.num_samples)
               if (records[q]["id"], s) not in done]
    progress = out / (f"progress.rank{ranks.rank}.jsonl" if ranks.parallel else PROGRESS)
    batches = plan_batches(pending, [len(p) for p in prompt_ids], cfg.batch_size)
    total = len(mine) * cfg.num_samples
    timing = {"generation_s": 0.0, "scoring_wait_s": 0.0}
    run = stage.run

    desc = f"{SCRIPT} (rank 0 of {ranks.world})" if ranks.parallel else SCRIPT
    bar = tqdm(total=total, initial=total - len(pending), desc=desc, unit="sample",
               disable=not ranks.main)
    workers = cfg.task.reward_workers or max(1, (os.cpu_count() or 1) // ranks.world)
    with ScorePool(workers, cfg.task.reward_timeout) as pool:
        scoring = None  # the previous batch's lines and the future of their scores
        for index, batch in enumerate(batches + [None]):
            generated = None
            if batch is not None:
                start = time.time()
                generated = engine.generate(
                    [prompt_ids[q] for q, _ in batch],
                    [sample_seed(cfg.seed, records[q]["id"], s) for q, s in batch])
                seconds = time.time() - start
                timing["generation_s"] += seconds
            if scoring is not None:  # scored while this batch generated
                wait = time.time()
                _finish_batch(progress, run, scoring, done, timing, wait)
                bar.update(len(scoring[0]))
            if batch is None:
                break
            texts = [tokenizer.decode(g.token_ids, skip_special_tokens=True) for g in generated]
            lines = [{"qid": records[q]["id"], "s": s, "token_ids": g.token_ids, "text": text,
                      "sampler_logprobs": g.sampler_logprobs, "finish_reason": g.finish_reason,
                      "num_tokens": len(g.token_ids), "seconds": seconds / len(batch)}
                     for (q, s), g, text in zip(batch, generated, texts)]
            future = pool.submit(texts, [records[q]["answer"] for q, _ in batch],
                                 cfg.task.format, cfg.task.ignore_think)
            scoring = (lines, future)
            tokens = sum(line["num_tokens"] for line in lines)
            bar.set_postfix(samples_s=f"{len(batch) / seconds:.1f}", tok_s=f"{tokens / seconds:.0f}")
    bar.close()
    ranks.barrier()
    if not ranks.main:
        return {}
    if ranks.parallel:  # the other ranks' samples are in their progress files
        done = {(line["qid"], line["s"]): line for line in _read_progress(out)}
    results = assemble_results(records, prompts, prompt_ids, done, cfg, engine)
    timing.update(load_s=load_seconds, total_s=time.time() - started)
    statistics = compute_statistics(results, cfg, engine.model_info, timing)
    io.write_json(out / RESULTS, results)
    io.write_json(out / STATISTICS, statistics)
    print(stats.format_table(statistics))
    print(f"wrote {out / RESULTS} and {out / STATISTICS}")
    stage.finish(summary=statistics)
    return statistics


def _finish_batch(progress: Path, run, scoring, done: dict, timing: dict,
                  wait_started: float) -> None:
    """Attach the scores to a generated batch and append it to progress.jsonl (one write per
    batch: a crash leaves whole batches or a cut last line, which the reader skips)."""
    lines, future = scoring
    scores = future.result()
    timing["scoring_wait_s"] += time.time() - wait_started
    for line, sc in zip(lines, scores):
        line.update(extracted=sc.extracted, reward=sc.reward, status=sc.status)
    io.append_jsonl(progress, lines)
    done.update({(line["qid"], line["s"]): line for line in lines})
    seconds = sum(line["seconds"] for line in lines)
    run.log({"samples_done": len(done),
             "batch_accuracy": sum(line["reward"] for line in lines) / len(lines),
             "tokens_per_s": sum(line["num_tokens"] for line in lines) / max(seconds, 1e-9)})


def _read_progress(out: Path) -> list[dict]:
    """Every finished sample, whichever process (and world size) drew it."""
    return [line for path in sorted(out.glob("progress*.jsonl")) for line in io.read_jsonl(path)]


def assemble_results(records, prompts, prompt_ids, done, cfg: SampleConfig, engine) -> dict:
    """results.json: per question its prompt, prompt token ids and samples, plus how they were
    made."""
    from rl_onoff.stats import answer_clusters, majority_vote
    from rl_onoff.tasks import answers_equivalent

    def equivalent(a, b):
        return answers_equivalent(a, b, cfg.task.reward_timeout)

    questions = []
    for q, record in enumerate(records):
        samples = [{k: v for k, v in done[(record["id"], s)].items() if k not in BOOKKEEPING}
                   for s in range(cfg.num_samples)]
        answers = [s["extracted"] for s in samples]
        labels = answer_clusters(answers, equivalent)
        for sample, cluster in zip(samples, labels):
            sample["cluster"] = cluster
        maj_answer, maj_reward = majority_vote(answers, [s["reward"] for s in samples],
                                               labels=labels)
        questions.append({
            "id": record["id"], "question": record["question"], "reference": record["answer"],
            "metadata": {k: record[k] for k in METADATA_KEYS if record.get(k) is not None},
            "prompt": prompts[q], "prompt_token_ids": prompt_ids[q],
            "maj_answer": maj_answer, "maj_reward": maj_reward, "samples": samples})
    seconds = sum(done[(r["id"], s)]["seconds"] for r in records for s in range(cfg.num_samples))
    return {
        "format_version": 2,
        "model": engine.model_info,
        "dataset": dataclasses.asdict(cfg.dataset),
        "task": dataclasses.asdict(cfg.task),
        "generation": {**cfg.sampling.params.to_dict(), "num_samples": cfg.num_samples,
                       "max_new_tokens": cfg.sampling.max_new_tokens, "stop": cfg.sampling.stop,
                       "eos_token_ids": engine.eos_ids, "seed": cfg.seed, "backend": engine.name,
                       "generation_seconds": seconds},
        "questions": questions,
    }


def compute_statistics(results: dict, cfg: SampleConfig, model_info: dict, timing: dict) -> dict:
    from rl_onoff.stats import summarize

    summary = summarize(results["questions"])
    seconds = results["generation"]["generation_seconds"]  # every batch's, resumed ones too
    tokens = sum(s["num_tokens"] for q in results["questions"] for s in q["samples"])
    return {**summary, "timing": timing, "wall_time_s": timing["total_s"],
            "tokens_per_s": tokens / seconds if seconds else None,
            "model": model_info, "seed": cfg.seed, "generation": results["generation"],
            "dataset": results["dataset"], "config": dataclasses.asdict(cfg)}
