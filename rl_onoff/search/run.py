"""03-tree-search: does searching over the model's own continuations beat plain sampling?

For each model (`models`, all on the same questions): search every question's
tree for `rollouts` rollouts, decode greedily, and sample plainly until each
question has used as many tokens as its tree; then score, compare at equal
budget, write the files and plots. Each model gets its own run record.
Output files are rewritten by every run (the run records keep the history).
"""

from __future__ import annotations

import dataclasses
import random
import time
from pathlib import Path

from rl_onoff import io
from rl_onoff.config import Config, ConfigError, TreeSearchConfig
from rl_onoff.sampling import resolve_path
from rl_onoff.search import metrics, plots

SECTION, SCRIPT = "03_tree_search", "03-tree-search"
OUTPUTS = ("results.json", "rollouts.jsonl", "summary.json", "run_config.json",
           "reward_vs_rollout.png", "accuracy_vs_budget.png")


def run_tree_search(config: Config) -> dict:
    """Run the stage as configured; return the summary it wrote."""
    from rl_onoff import tracking
    from rl_onoff.data import load_dataset

    cfg: TreeSearchConfig = config[SECTION]
    records = load_dataset(cfg.dataset.name, cfg.dataset.split, **cfg.dataset.options())
    if not records:
        raise ConfigError(f"{SECTION}.dataset: {cfg.dataset.name}/{cfg.dataset.split} with these "
                          "filters has no records; loosen `levels`/`subjects`/`num_examples`")
    out = resolve_path(cfg.output_dir)
    for name in OUTPUTS:
        (out / name).unlink(missing_ok=True)
    done = [run_model(config, name, records, out) for name in (cfg.models or [cfg.model])]
    io.write_json(out / "results.json", {
        "format_version": 1, "dataset": dataclasses.asdict(cfg.dataset),
        "task": dataclasses.asdict(cfg.task), "settings": _settings(cfg),
        "models": [{"model": m["info"], "questions": m["questions"]} for m in done]})
    summary = {"questions": len(records), "settings": _settings(cfg),
               "models": {m["name"]: {**m["summary"], "curves": m["curves"], "run_dir": m["run_dir"]}
                          for m in done}}
    io.write_json(out / "summary.json", summary)
    plots.reward_vs_rollout(done, out / "reward_vs_rollout.png")
    plots.accuracy_vs_budget(done, out / "accuracy_vs_budget.png")
    tracking.write_provenance(out, config, SECTION, None, {m["name"]: m["info"] for m in done})
    print(format_table(done))
    print(f"wrote {out}/: {', '.join(OUTPUTS)}")
    return summary


def _settings(cfg: TreeSearchConfig) -> dict:
    keep = ("rollouts", "sampling", "lam",
            "widen_c", "widen_alpha", "selection", "uct_c", "shaping", "samples_ahead", "seed")
    return {k: dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v
            for k in keep for v in [getattr(cfg, k)]}


def run_model(config: Config, name: str, records: list[dict], out: Path) -> dict:
    """Search, greedy and plain sampling for one model; its run record; its part of the outputs."""
    import torch
    from tqdm import tqdm

    from rl_onoff import tracking
    from rl_onoff.decoding import SamplingParams
    from rl_onoff.generation import eos_token_ids
    from rl_onoff.models import describe, load_model
    from rl_onoff.search.baseline import generate_all, sample_pools
    from rl_onoff.tasks import build_prompt, encode_prompt

    cfg: TreeSearchConfig = config[SECTION]
    torch.manual_seed(cfg.seed)
    model, tokenizer = load_model(name, cfg.device, cfg.dtype, revision=cfg.revision,
                                  trust_remote_code=cfg.trust_remote_code)
    info = describe(model, name)
    task = cfg.task
    prompt_ids = [encode_prompt(build_prompt(r["question"], tokenizer, task.template, task.format,
                                             task.system_prompt, task.enable_thinking,
                                             task.prefill), tokenizer, task.template)
                  for r in records]
    references = [r["answer"] for r in records]
    params = cfg.sampling.params
    eos_ids = eos_token_ids(model, tokenizer)
    device = next(model.parameters()).device
    scorer = Scorer(tokenizer, cfg)
    # the run record of this model: the section as if `model` were this one
    model_config = Config(config.defaults, {**config.sections,
                                            SECTION: dataclasses.replace(cfg, model=name)},
                          config.source)
    with tracking.start_run(SCRIPT, model_config, SECTION, output_dir=out) as run:
        logger = RolloutLog(run, out / "rollouts.jsonl", name, records)
        trees = search_questions(model, tokenizer, prompt_ids, references, cfg, params, eos_ids,
                                 scorer, logger)
        greedy = generate_all(model, tokenizer, prompt_ids, SamplingParams(temperature=0.0),
                              cfg.sampling.max_new_tokens, eos_ids, cfg.batch_size)
        with tqdm(desc=f"{SCRIPT} plain sampling {name}", unit="sample") as bar:
            pools, pool_seconds = sample_pools(
                model, tokenizer, prompt_ids, [t["budget_tokens"] for t in trees], params,
                cfg.sampling.max_new_tokens, eos_ids, cfg.batch_size, [len(g.token_ids) for g in greedy],
                torch.Generator(device=device).manual_seed(cfg.seed * 1_000_003 + 999_983), bar)
        questions = []
        for q, record in enumerate(records):
            samples = scorer.generated(pools[q], references[q])
            questions.append({
                "id": record["id"], "question": record["question"], "reference": record["answer"],
                "level": record.get("level"), "tree": trees[q],
                "greedy": scorer.generated([greedy[q]], references[q])[0],
                "sampling": {"samples": samples,
                             "at_budget": metrics.sampling_at_budget(samples,
                                                                     trees[q]["budget_tokens"])}})
        summary = metrics.aggregate(questions, pool_seconds)
        summary["model"] = info
        entry = {"name": name, "info": info, "questions": questions, "summary": summary,
                 "run_dir": str(run.dir),
                 "greedy_tokens": sum(q["greedy"]["num_tokens"] for q in questions) / len(questions),
                 "curves": {"reward": metrics.reward_curves(questions),
                            "budget": metrics.budget_curves(questions)}}
        run.log_table("questions", *question_table(questions))
        for plot in (plots.reward_vs_rollout, plots.accuracy_vs_budget):
            path = plot([entry], run.dir / "plots" / f"{plot.__name__}.png")
            run.log_image(plot.__name__, path)
        run.finish(summary=summary)
    return entry


class Scorer:
    """Rewards (task + shaping) of responses given as token ids, kept with their text."""

    def __init__(self, tokenizer, cfg: TreeSearchConfig):
        self.tokenizer, self.cfg = tokenizer, cfg

    def score(self, token_lists: list[list[int]], finishes: list[str], references: list[str]):
        from rl_onoff.search.rewards import score_responses

        texts = [self.tokenizer.decode(ids, skip_special_tokens=True) for ids in token_lists]
        scored = score_responses(texts, [len(ids) for ids in token_lists], finishes, references,
                                 self.cfg.task, self.cfg.shaping, self.cfg.sampling.max_new_tokens)
        return texts, scored

    def generated(self, generated: list, reference: str) -> list[dict]:
        """Plain samples or greedy decodes (rl_onoff.generation.Generated) as scored records."""
        texts, scored = self.score([g.token_ids for g in generated],
                                   [g.finish_reason for g in generated],
                                   [reference] * len(generated))
        return [{"text": text, "token_ids": g.token_ids, "num_tokens": len(g.token_ids),
                 "finish_reason": g.finish_reason, "reward": s.reward, "correct": s.correct,
                 "extracted": s.extracted, "status": s.status}
                for g, text, s in zip(generated, texts, scored)]


class RolloutLog:
    """Every rollout: a line of rollouts.jsonl and a step of the run's metrics."""

    def __init__(self, run, path: Path, model: str, records: list[dict]):
        self.run, self.path, self.model, self.records = run, path, model, records
        self.step = 0

    def __call__(self, q: int, rollout: dict, text: str) -> None:
        self.step += 1
        io.append_jsonl(self.path, {"model": self.model, "question": q,
                                    "id": self.records[q]["id"], **rollout, "text": text})
        self.run.log({"question": q, **{k: rollout[k] for k in (
            "rollout", "reward", "best_reward", "tree_nodes", "budget_tokens", "forward_tokens",
            "seconds")}}, step=self.step)


def search_questions(model, tokenizer, prompt_ids, references, cfg: TreeSearchConfig, params,
                     eos_ids, scorer: Scorer, log: RolloutLog) -> list[dict]:
    """The tree of every question, `batch_size` trees at a time; per question its record."""
    from tqdm import tqdm

    out = []
    with tqdm(total=len(prompt_ids) * cfg.rollouts, desc=f"{SCRIPT} {log.model}",
              unit="rollout") as bar:
        for group, first in enumerate(range(0, len(prompt_ids), cfg.batch_size)):
            index = list(range(first, min(first + cfg.batch_size, len(prompt_ids))))
            out += search_group(model, tokenizer, index, prompt_ids, references, cfg, params,
                                eos_ids, scorer, log, cfg.seed * 1_000_003 + group, bar)
    return out


def search_group(model, tokenizer, index, prompt_ids, references, cfg: TreeSearchConfig, params,
                 eos_ids, scorer: Scorer, log: RolloutLog, seed: int, bar) -> list[dict]:
    """Search the trees of questions `index` together; per question its record."""
    import torch

    from rl_onoff.search.dts import Settings, iterate
    from rl_onoff.search.kv import KVPolicy
    from rl_onoff.search.tree import tokens

    settings = Settings(cfg.lam, cfg.widen_c, cfg.widen_alpha, cfg.selection, cfg.uct_c)
    device = next(model.parameters()).device
    policy = KVPolicy(model, params, eos_ids, cfg.sampling.max_new_tokens,
                      torch.Generator(device=device).manual_seed(seed), tokenizer.pad_token_id,
                      cfg.samples_ahead)
    rng = random.Random(seed)
    start = time.time()
    trees = policy.new_trees([prompt_ids[q] for q in index])
    tree_ref = {t: references[q] for t, q in zip(trees, index)}
    scored, texts = {}, {}            # terminal node -> Scored, text

    def score(pairs):
        token_lists = [tokens(leaf) for _, leaf in pairs]
        new_texts, results = scorer.score(token_lists, [leaf.finish for _, leaf in pairs],
                                          [tree_ref[tree] for tree, _ in pairs])
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
            history = histories[i]
            rollout = {"rollout": k, "reward": leaf.reward, "correct": scored[leaf].correct,
                       "new_response": leaf.found_at == k, "response_tokens": leaf.depth,
                       "finish": leaf.finish, "extracted": scored[leaf].extracted,
                       "new_tokens": tree.size + tree.refills - spent[i],
                       "budget_tokens": tree.size + tree.refills, "tree_nodes": tree.size,
                       "forward_tokens": tree.forward_tokens, "seconds": seconds,
                       "best_reward": best[i].reward, "best_correct": scored[best[i]].correct}
            history.append(rollout)
            log(index[i], rollout, texts[leaf])
        bar.update(len(trees))
    seconds = (time.time() - start) / len(trees)
    return [tree_record(tree, history, scored, texts, settings.lam, rng, seconds)
            for tree, history in zip(trees, histories)]


def tree_record(tree, history: list[dict], scored: dict, texts: dict, lam: float,
                rng: random.Random, seconds: float) -> dict:
    """One question's search: its outputs (best, Boltzmann sample), responses and statistics."""
    from rl_onoff.search.tree import best_terminal, boltzmann_walk, tokens, walk_probabilities

    probs = walk_probabilities(tree.root, lam)

    def response(node) -> dict:
        s = scored[node]
        return {"text": texts[node], "token_ids": tokens(node), "num_tokens": node.depth,
                "finish_reason": node.finish, "reward": node.reward, "correct": s.correct,
                "extracted": s.extracted, "status": s.status, "found_at": node.found_at,
                "visits": node.visits, "walk_probability": probs.get(node, 0.0)}

    rewards = [r["reward"] for r in history]
    return {
        "best": response(best_terminal(tree, lam)),
        "boltzmann": response(boltzmann_walk(tree.root, lam, rng)),
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
        "responses": [response(t) for t in tree.terminals],
        "rollouts": history,
    }


def question_table(questions: list[dict]) -> tuple[list[str], list[list]]:
    columns = ["id", "level", "tree_best", "tree_boltzmann", "greedy", "best_of_n", "budget_tokens",
               "best_of_n_samples", "rollouts_to_first_correct", "improvement_rate"]
    rows = [[q["id"], q["level"], q["tree"]["best"]["correct"], q["tree"]["boltzmann"]["correct"],
             q["greedy"]["correct"], q["sampling"]["at_budget"]["best_of_n_correct"],
             q["tree"]["budget_tokens"], q["sampling"]["at_budget"]["n"],
             q["tree"]["rollouts_to_first_correct"], q["tree"]["improvement_rate"]]
            for q in questions]
    return columns, rows


def format_table(models: list[dict]) -> str:
    """Accuracy per model and method, for the terminal."""
    header = ["model", "tree best", "boltzmann", "greedy", "best-of-n", "pass@n", "1 sample",
              "tokens/q", "n", "s/q tree"]
    rows = []
    for m in models:
        s, a = m["summary"], m["summary"]["accuracy"]
        rows.append([m["name"], *(f"{a[k]:.3f}" for k in ("tree_best", "tree_boltzmann", "greedy",
                                                            "best_of_n", "pass_at_n",
                                                            "single_sample")),
                     f"{s['mean_budget_tokens']:.0f}", f"{s['mean_best_of_n_samples']:.1f}",
                     f"{s['seconds_per_question']['tree']:.2f}"])
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).rjust(w) for c, w in zip(r, widths)) for r in [header, *rows]]
    lines.append("accuracy at equal budget: tokens/q = tokens the tree sampled per question; "
                 "best-of-n and pass@n use plain samples until they spent as many (n = samples)")
    return "\n".join(lines)
