"""03-tree-search: does searching the model's own continuations beat its controls?

Every model is loaded and its prompts checked before any search. Then per model and seed:
a tree per question for every setting (lambda x C x alpha) and for its reward-blind twin
(lambda -> 0, same seed), greedy decoding, and one pool of plain samples that serves both
sampling controls (every token counted; shared prefixes counted once) at each tree's
budget. Accuracies carry 95% bootstrap intervals over questions and seeds; numbers that pick
a response with the reference answer are marked oracle (rl_onoff.search.metrics.ORACLE).
"""

from __future__ import annotations

import dataclasses
import random
import time
from pathlib import Path

from rl_onoff import io
from rl_onoff.config import Config
from rl_onoff.search import metrics, plots
from rl_onoff.search.config import TreeSearchConfig

SECTION, SCRIPT = "03_tree_search", "03-tree-search"
OUTPUTS = ("results.json", "rollouts.jsonl", "summary.json", "accuracy_vs_lambda.png")


def run_tree_search(config: Config) -> dict:
    """Run the stage as configured; return the summary it wrote."""
    from rl_onoff.stage import Stage

    with Stage(SCRIPT, SECTION, config) as stage:
        return _search(stage)


@dataclasses.dataclass(frozen=True)
class Setting:
    lam: float
    widen_c: float
    widen_alpha: float

    @property
    def label(self) -> str:
        return f"lam={self.lam:g} C={self.widen_c:g} alpha={self.widen_alpha:g}"


def settings_of(cfg: TreeSearchConfig) -> tuple[list[Setting], dict[Setting, Setting]]:
    """Every tree to grow (the grid and the blind twins), and each one's blind twin."""
    grid = [Setting(lam, c, a) for c in cfg.widen_c for a in cfg.widen_alpha
            for lam in sorted({*cfg.lambdas, cfg.blind_lambda})]
    return grid, {s: Setting(cfg.blind_lambda, s.widen_c, s.widen_alpha) for s in grid}


def _search(stage) -> dict:
    from rl_onoff.search.rewards import Scorer
    from rl_onoff.stage import context_length

    cfg: TreeSearchConfig = stage.cfg
    records = stage.load_dataset()
    names = cfg.models or [cfg.model]
    loaded = {}
    for name in names:                      # every model loads and fits before any search
        model, tokenizer = stage.load_model(name)
        loaded[name] = (model, tokenizer, stage.prompts(records, tokenizer, context_length(model)))
    out = stage.claim()
    if stage.ranks.main:
        for name in OUTPUTS:
            (out / name).unlink(missing_ok=True)
    grid, blind = settings_of(cfg)
    models = {}
    for name, (model, tokenizer, (kept, _, prompt_ids)) in loaded.items():
        scorer = Scorer(tokenizer, cfg.task, cfg.reward, cfg.shaping, cfg.sampling.max_new_tokens)
        models[name] = run_model(stage, name, model, tokenizer, kept, prompt_ids, scorer, grid,
                                 out)
    if not stage.ranks.main:
        return {}
    summary = build_summary(models, grid, blind, cfg.reward, cfg.shaping, cfg.bootstrap)
    write_outputs(out, {"format_version": 2, "dataset": dataclasses.asdict(cfg.dataset),
                        "task": dataclasses.asdict(cfg.task), "models": models}, summary, grid)
    stage.run.log_image("accuracy_vs_lambda", out / "accuracy_vs_lambda.png")
    stage.finish(summary=summary)
    return summary


def build_summary(models: dict, grid: list[Setting], blind: dict, reward: str, shaping: dict,
                  resamples: int) -> dict:
    """summary.json from the per-question records of every model (all seeds)."""
    from rl_onoff.search.intervals import METHOD
    from rl_onoff.search.rewards import uses_reference

    reads_reference = uses_reference(reward, shaping)
    first = next(iter(models.values()))["questions"][0]
    return {
        "questions": {n: len(m["questions"]) for n, m in models.items()},
        "seeds": [int(s) for s in first["seeds"]], "reward": reward, "shaping": shaping,
        "reward_reads_reference": reads_reference, "interval_method": METHOD,
        "oracle_note": "oracle: the number picks among responses with the reference answer "
                       "(pass@n, any correct; best and Boltzmann when the reward reads it)",
        "models": {n: summarize_model(m, grid, blind, reads_reference, resamples)
                   for n, m in models.items()}}


def write_outputs(out: Path, results: dict, summary: dict, grid: list[Setting]) -> None:
    io.write_json(out / "results.json", results)
    io.write_json(out / "summary.json", summary)
    plots.accuracy_vs_lambda(summary, grid, out / "accuracy_vs_lambda.png")
    print(format_table(summary))
    print(f"wrote {out}/: {', '.join(OUTPUTS)}")


def run_model(stage, name, model, tokenizer, records, prompt_ids, scorer, grid, out: Path) -> dict:
    """Trees for every setting and seed, greedy, the sampling pools; per question the records.

    Questions go in groups of `batch_size`, each group with its own random streams (from the
    seed and the group's number), so under torchrun a rank that takes every world-th group
    computes exactly what one process would; rank 0 gathers the groups in order."""
    import torch
    from tqdm import tqdm

    from rl_onoff.decoding import SamplingParams
    from rl_onoff.generation import eos_token_ids
    from rl_onoff.search.baseline import distinct_new_tokens, generate_all, sample_pools

    cfg: TreeSearchConfig = stage.cfg
    ranks = stage.ranks
    groups = ranks.shard([list(range(first, min(first + cfg.batch_size, len(records))))
                          for first in range(0, len(records), cfg.batch_size)])
    groups = [(number * ranks.world + ranks.rank, index) for number, index in enumerate(groups)]
    mine = [q for _, index in groups for q in index]
    references = [r["answer"] for r in records]
    eos_ids = eos_token_ids(model, tokenizer)
    device = next(model.parameters()).device
    greedy = generate_all(model, tokenizer, [prompt_ids[q] for q in mine],
                          SamplingParams(temperature=0.0), cfg.sampling.max_new_tokens, eos_ids,
                          cfg.batch_size)
    greedy = dict(zip(mine, (scored_samples(scorer, [g], references[q], cfg)[0]
                             for q, g in zip(mine, greedy))))
    questions = {q: {"id": records[q]["id"], "question": records[q]["question"],
                     "reference": records[q]["answer"], "level": records[q].get("level"),
                     "greedy": greedy[q], "seeds": {}} for q in mine}
    rollouts = out / (f"rollouts.rank{ranks.rank}.jsonl" if ranks.parallel else "rollouts.jsonl")
    log = RolloutLog(stage.run, rollouts, name, records)
    for seed in cfg.seed_list:
        torch.manual_seed(seed)
        trees = {}
        for setting in grid:
            log.context = {"seed": seed, "setting": setting.label}
            trees[setting] = search_questions(model, prompt_ids, references, cfg, setting,
                                              eos_ids, scorer, log, seed, records, groups,
                                              ranks.main)
        budgets = {q: max(trees[s][q]["budget_tokens"] for s in grid) for q in mine}
        with tqdm(desc=f"{SCRIPT} plain sampling {name} seed {seed}", unit="sample",
                  disable=not ranks.main) as bar:
            for group, index in groups:
                pools, seconds = sample_pools(
                    model, tokenizer, [prompt_ids[q] for q in index], [budgets[q] for q in index],
                    cfg.sampling.params, cfg.sampling.max_new_tokens, eos_ids, cfg.batch_size,
                    [greedy[q]["num_tokens"] for q in index],
                    torch.Generator(device=device).manual_seed(
                        seed * 1_000_003 + 999_983 + 7919 * group),
                    cfg.rollouts * cfg.max_pool_factor, bar)
                for q, pool in zip(index, pools):
                    samples = scored_samples(scorer, pool, references[q], cfg)
                    for sample, new in zip(samples,
                                           distinct_new_tokens([g.token_ids for g in pool])):
                        sample["new_tokens"] = new
                    questions[q]["seeds"][str(seed)] = {
                        "trees": {s.label: trees[s][q] for s in grid}, "samples": samples,
                        "sampling_seconds": seconds / len(index)}
    if ranks.parallel:
        parts = ranks.gather(questions)
        if not ranks.main:
            return {}
        questions = {q: record for part in parts for q, record in part.items()}
        with open(out / "rollouts.jsonl", "w", encoding="utf-8") as merged:
            for rank in range(ranks.world):
                part = out / f"rollouts.rank{rank}.jsonl"
                merged.write(part.read_text(encoding="utf-8") if part.is_file() else "")
                part.unlink(missing_ok=True)
    return {"model": stage.models[name], "questions": [questions[q] for q in range(len(records))]}


def scored_samples(scorer, generated: list, reference: str, cfg: TreeSearchConfig) -> list[dict]:
    """Plain samples or greedy decodes (rl_onoff.generation.Generated) as scored records, with
    their answers' math-equivalence clusters (for majority votes)."""
    texts, scored = scorer.score([g.token_ids for g in generated],
                                 [g.finish_reason for g in generated],
                                 [reference] * len(generated))
    out = [{"text": text, "token_ids": g.token_ids, "num_tokens": len(g.token_ids),
            "finish_reason": g.finish_reason,
            "reward": s.reward, "correct": s.correct, "extracted": s.extracted,
            "status": s.status} for g, text, s in zip(generated, texts, scored)]
    return with_clusters(out, cfg)


def with_clusters(items: list[dict], cfg: TreeSearchConfig) -> list[dict]:
    from rl_onoff.stats import answer_clusters
    from rl_onoff.tasks import answers_equivalent

    labels = answer_clusters([i["extracted"] for i in items],
                             lambda a, b: answers_equivalent(a, b, cfg.task.reward_timeout))
    for item, label in zip(items, labels):
        item["cluster"] = label
    return items


class RolloutLog:
    """Every rollout: a line of rollouts.jsonl and a step of the run's metrics."""

    def __init__(self, run, path: Path, model: str, records: list[dict]):
        self.run, self.path, self.model, self.records = run, path, model, records
        self.step, self.context = 0, {}

    def __call__(self, q: int, rollout: dict, text: str) -> None:
        self.step += 1
        io.append_jsonl(self.path, {"model": self.model, **self.context, "question": q,
                                    "id": self.records[q]["id"], **rollout, "text": text})
        self.run.log({"question": q, **{k: rollout[k] for k in (
            "rollout", "reward", "best_reward", "tree_nodes", "budget_tokens", "forward_tokens",
            "seconds")}}, step=self.step)


def search_questions(model, prompt_ids, references, cfg: TreeSearchConfig, setting: Setting,
                     eos_ids, scorer, log: RolloutLog, seed: int, records, groups,
                     show: bool = True) -> dict[int, dict]:
    """The tree of every question of `groups` ([(group number, question ids)]) under one
    setting, a group's trees together; question id -> its record."""
    from tqdm import tqdm

    out = {}
    with tqdm(total=sum(len(index) for _, index in groups) * cfg.rollouts,
              desc=f"{SCRIPT} {log.model} seed {seed} {setting.label}", unit="rollout",
              disable=not show) as bar:
        for group, index in groups:
            out.update(zip(index, search_group(model, index, prompt_ids, references, cfg, setting,
                                               eos_ids, scorer, log, seed * 1_000_003 + group,
                                               bar, records)))
    return out


def search_group(model, index, prompt_ids, references, cfg: TreeSearchConfig, setting: Setting,
                 eos_ids, scorer, log: RolloutLog, seed: int, bar, records) -> list[dict]:
    """Search the trees of questions `index` together; per question its record."""
    import torch

    from rl_onoff.search.dts import Settings, iterate
    from rl_onoff.search.kv import KVPolicy
    from rl_onoff.search.tree import tokens

    settings = Settings(setting.lam, setting.widen_c, setting.widen_alpha, cfg.selection,
                        cfg.uct_c)
    device = next(model.parameters()).device
    policy = KVPolicy(model, cfg.sampling.params, eos_ids, cfg.sampling.max_new_tokens,
                      torch.Generator(device=device).manual_seed(seed),
                      scorer.tokenizer.pad_token_id, cfg.samples_ahead)
    rng = random.Random(seed)
    start = time.time()
    trees = policy.new_trees([prompt_ids[q] for q in index])
    tree_question = {t: q for t, q in zip(trees, index)}
    scored, texts = {}, {}            # terminal node -> Scored, text

    def score(pairs):
        new_texts, results = scorer.score(
            [tokens(leaf) for _, leaf in pairs], [leaf.finish for _, leaf in pairs],
            [references[tree_question[tree]] for tree, _ in pairs],
            [records[tree_question[tree]]["question"] for tree, _ in pairs])
        for (_, leaf), text, result in zip(pairs, new_texts, results):
            scored[leaf], texts[leaf] = result, text
        return [r.reward for r in results]

    histories = [[] for _ in trees]
    best = [None] * len(trees)
    for k in range(1, cfg.rollouts + 1):
        spent = [t.size + t.refills for t in trees]
        tick = time.time()
        leaves = iterate(trees, policy, score, settings, rng, k)
        seconds = (time.time() - tick) / len(trees)
        for i, (tree, leaf) in enumerate(zip(trees, leaves)):
            if best[i] is None or leaf.reward > best[i].reward:
                best[i] = leaf
            rollout = {"rollout": k, "reward": leaf.reward, "correct": scored[leaf].correct,
                       "new_response": leaf.found_at == k, "response_tokens": leaf.depth,
                       "finish": leaf.finish, "extracted": scored[leaf].extracted,
                       "new_tokens": tree.size + tree.refills - spent[i],
                       "budget_tokens": tree.size + tree.refills, "tree_nodes": tree.size,
                       "forward_tokens": tree.forward_tokens, "seconds": seconds,
                       "best_reward": best[i].reward, "best_correct": scored[best[i]].correct}
            histories[i].append(rollout)
            log(index[i], rollout, texts[leaf])
        bar.update(len(trees))
    seconds = (time.time() - start) / len(trees)
    return [tree_record(tree, history, scored, texts, settings.lam, rng, seconds, cfg)
            for tree, history in zip(trees, histories)]


def tree_record(tree, history: list[dict], scored: dict, texts: dict, lam: float,
                rng: random.Random, seconds: float, cfg: TreeSearchConfig) -> dict:
    """One question's search: its outputs (best, Boltzmann sample), responses and statistics."""
    from rl_onoff.search.tree import best_terminal, boltzmann_walk, walk_probabilities

    probs = walk_probabilities(tree.root, lam)
    leaves = sorted(tree.terminals, key=lambda n: n.found_at)
    responses = with_clusters([
        {"text": texts[n], "num_tokens": n.depth, "finish_reason": n.finish,
         "reward": n.reward, "correct": scored[n].correct, "extracted": scored[n].extracted,
         "status": scored[n].status, "found_at": n.found_at, "visits": n.visits,
         "walk_probability": probs.get(n, 0.0)} for n in leaves], cfg)
    position = {n: i for i, n in enumerate(leaves)}
    rewards = [r["reward"] for r in history]
    return {
        "best": responses[position[best_terminal(tree, lam)]],
        "boltzmann": responses[position[boltzmann_walk(tree.root, lam, rng)]],
        "boltzmann_p_correct": sum(p for node, p in probs.items() if scored[node].correct),
        "rewards": rewards,
        "best_reward": max(rewards),
        "rollouts_to_first_correct": metrics.first_correct([r["correct"] for r in history]),
        "improvement_rate": metrics.improvement_rate(rewards),
        "shuffled_improvement_rate": metrics.shuffled_improvement_rate(rewards),
        "root_value": tree.root.value,
        "nodes": tree.size, "budget_tokens": tree.size + tree.refills,
        "forward_tokens": tree.forward_tokens, "prompt_tokens": tree.prompt_len,
        "refills": tree.refills, "seconds": seconds,
        "responses": responses,
        "rollouts": history,
    }


def summarize_model(entry: dict, grid: list[Setting], blind: dict, reads_reference: bool,
                    resamples: int) -> dict:
    """Greedy, one sample, and every setting's accuracies with intervals and differences."""
    from rl_onoff.search.intervals import interval

    questions = entry["questions"]
    seeds = list(questions[0]["seeds"])
    out = {"model": entry["model"],
           "greedy": {**interval([[q["greedy"]["correct"]] for q in questions], resamples),
                      "oracle": False},
           "single_sample": {**interval([[sum(s["correct"] for s in q["seeds"][s]["samples"]) /
                                          len(q["seeds"][s]["samples"]) for s in seeds]
                                         for q in questions], resamples), "oracle": False},
           "settings": {}}
    for setting in grid:
        cells = [[q["seeds"][s]["trees"] for s in seeds] for q in questions]
        values = [[metrics.question_values(c[setting.label], c[blind[setting].label],
                                           q["seeds"][s]["samples"])
                   for c, s in zip(row, seeds)] for row, q in zip(cells, questions)]
        trees = [[c[setting.label] for c in row] for row in cells]
        out["settings"][setting.label] = {
            **dataclasses.asdict(setting), "blind_twin": blind[setting].label,
            **metrics.setting_summary(values, trees, reads_reference, resamples)}
    return out


def format_table(summary: dict) -> str:
    """Accuracy with 95% intervals per model, setting and method, and the paired differences."""
    from rl_onoff.search.intervals import fmt

    lines = []
    for name, m in summary["models"].items():
        lines.append(f"{name}: greedy {fmt(m['greedy'])}, one sample {fmt(m['single_sample'])}")
        for label, s in m["settings"].items():
            lines.append(f"  {label}: {s['mean_budget_tokens']:.0f} tokens/question, "
                         f"{s['mean_distinct_responses']:.1f} distinct responses, "
                         f"empty rollouts {s['empty_rollout_share']:.3f}")
            for key, acc in s["accuracy"].items():
                tag = " (oracle)" if acc["oracle"] else ""
                lines.append(f"    {key + tag:<36} {fmt(acc)}")
            for key, diff in s["differences"].items():
                mark = "" if diff["excludes_zero"] else "  (interval holds 0)"
                lines.append(f"    {key:<46} {fmt(diff)}{mark}")
    lines.append(f"intervals: {summary['interval_method']}")
    return "\n".join(lines)
