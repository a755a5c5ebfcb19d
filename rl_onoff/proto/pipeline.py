"""04-proto end to end: targets, optimisation (or the capacity search), clean evaluation,
the no-memory baseline, analyses, files; for each model in `models`.

Outputs in `output_dir` (with several models: one folder per model, named after it,
plus summary.json over all and capacity_vs_params.png):
    proto.npz            e (texts x d), m (texts x d; 1 x d shared; 0 x d when unused),
                         token_ids (texts x longest, -1 padded), lengths, restart, kind
                         (target | random), method, arrangement, bos, model: enough to
                         rebuild the inputs and check
    texts.json           per text: target vs reconstruction (and, for [mem], what greedy
                         generation emits), accuracy, first error, cross-entropy, no-memory
                         baseline and gains, steps and why it stopped, every restart (and
                         every attempted length of the capacity search)
    summary.json         the run's numbers, targets and random controls apart
    history.npz          per-step curves (restarts x steps x texts), each text's attempts
                         end to end, NaN once a text stopped
    training_curves.png, error_map.png, capacity.png (sweep only), run_config.json
"""

from __future__ import annotations

import dataclasses
import re
import time

import numpy as np

from rl_onoff import io
from rl_onoff.proto.config import ProtoConfig
from rl_onoff.proto.evaluate import PARTIAL, SUCCESS
from rl_onoff.proto.targets import SECTION

SCRIPT = "04-proto"


class StepLog:
    """Numbers the run record's steps across models, restarts, batches and search rounds."""

    def __init__(self, run, every: int):
        self.run, self.every, self.offset, self.last = run, every, 0, -1

    def for_part(self, **context):
        def log(step: int, metrics: dict) -> None:
            if step <= self.last:       # a new optimisation began
                self.offset += self.last + 1
            self.last = step
            clean = {k: (float(v) if isinstance(v, np.floating) else v)
                     for k, v in metrics.items() if v is not None}
            self.run.log({**context, **clean}, step=self.offset + step)
        return log

    def next_part(self) -> None:
        self.offset, self.last = self.offset + self.last + 1, -1


def with_model(config, results: dict | None):
    """The config with `04_proto.model` resolved when null: the model that wrote 00's
    samples (with its revision), or `defaults.model` when the texts come from the YAML."""
    cfg: ProtoConfig = config[SECTION]
    if cfg.model is not None:
        return config
    if results is None:
        cfg = dataclasses.replace(cfg, model=config.defaults.model)
    else:
        cfg = dataclasses.replace(cfg, model=results["model"]["name"],
                                  revision=cfg.revision or results["model"].get("revision"))
    return dataclasses.replace(config, sections={**config.sections, SECTION: cfg})


def folder_name(model: str) -> str:
    """A folder name for a model name or path."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", model.strip("/")).strip("_") or "model"


def run_proto(config) -> dict:
    """Run 04-proto as configured; return the summary it wrote."""
    from rl_onoff.sample.results import load_results
    from rl_onoff.stage import Stage

    cfg: ProtoConfig = config[SECTION]
    results = None if cfg.texts else load_results(config.resolve(cfg.input), f"{SECTION}.input")
    config = with_model(config, results)
    with Stage(SCRIPT, SECTION, config) as stage:
        return _proto(stage, results)


def _proto(stage, results: dict | None) -> dict:
    cfg: ProtoConfig = stage.cfg
    names = cfg.models or [cfg.model]
    loaded = {name: stage.load_model(name) for name in names}
    for model, _ in loaded.values():
        model.requires_grad_(False)
    out = stage.claim()
    steplog = StepLog(stage.run, cfg.log_every)
    summaries = {}
    for name, (model, tokenizer) in loaded.items():
        folder = out if len(names) == 1 else out / folder_name(name)
        summaries[name] = run_model(stage, name, model, tokenizer, results, folder, steplog)
    if not stage.ranks.main:
        return {}
    if len(names) == 1:
        summary = summaries[names[0]]
    else:
        summary = {"models": summaries, "model_order": names}
        io.write_json(out / "summary.json", summary)
        if cfg.sweep:
            from rl_onoff.proto import plots

            plots.capacity_vs_params(summaries, out / "capacity_vs_params.png")
            stage.run.log_image("capacity_vs_params", out / "capacity_vs_params.png")
    stage.finish(summary=summary)
    return summary


def run_model(stage, name: str, model, tokenizer, results, out, steplog) -> dict:
    """All of 04 for one model, written to `out`; returns its summary."""
    import torch
    from tqdm import tqdm

    from rl_onoff.config import ConfigError
    from rl_onoff.proto.baseline import gains, no_memory, start_token
    from rl_onoff.proto.evaluate import evaluate
    from rl_onoff.proto.optimize import (
        Settings,
        embedding_norm,
        initial_vectors,
        optimise,
    )
    from rl_onoff.proto.sweep import capacity_search
    from rl_onoff.proto.targets import build_targets, random_controls

    cfg: ProtoConfig = stage.cfg
    torch.manual_seed(cfg.seed)
    out.mkdir(parents=True, exist_ok=True)
    targets = build_targets(cfg, tokenizer, results)
    if cfg.control:
        targets += random_controls(targets, tokenizer, cfg.seed)
    if cfg.share_m and len(targets) > cfg.batch_size:
        raise ConfigError(f"{SECTION}.share_m: one m is learned for a whole batch; raise "
                          f"`{SECTION}.batch_size` to at least {len(targets)}, the number of texts"
                          + (" (random controls included; or set control: false)"
                             if cfg.control else ""))
    bos = tokenizer.bos_token_id if cfg.method == "mem" else None
    settings = Settings.from_config(cfg, bos=bos)
    ids = [t.token_ids for t in targets]
    ranks = stage.ranks
    if ranks.parallel and cfg.share_m:
        raise ConfigError(f"{SECTION}.share_m: one m is learned from all texts together, which "
                          "cannot be split over processes; run it without torchrun")
    mine = ranks.shard(range(len(targets)))  # under torchrun: every world-th text
    chunks = [mine[i:i + cfg.batch_size] for i in range(0, len(mine), cfg.batch_size)]
    total = 0 if cfg.sweep else cfg.restarts * cfg.steps * len(chunks)
    bar = tqdm(total=total, desc=f"{SCRIPT} {name}", unit="step", disable=not ranks.main)
    start = time.time()
    tries = {}   # (restart, text) -> what that attempt kept
    rounds = []  # [(rows [(text, restart)], Result)]
    if cfg.sweep:
        searches, local_rounds = capacity_search(
            model, tokenizer, [ids[t] for t in mine], settings, cfg.seed, cfg.restarts,
            cfg.sweep_start, cfg.batch_size, steplog.for_part(model=name), cfg.log_every, bar,
            keys=mine)
        for r, row in enumerate(searches):
            for local, search in enumerate(row):
                tries[(r, mine[local])] = {**search.kept, "levels": search.attempts,
                                           "capacity": search.solved}
        rounds = [([(mine[t], r) for t, r in rows], result) for rows, result in local_rounds]
    else:
        for restart in range(cfg.restarts):
            for index, chunk in enumerate(chunks):
                e0, m0 = initial_vectors(model, settings, chunk, cfg.seed, restart)
                chunk_ids = [ids[t] for t in chunk]
                result = optimise(model, chunk_ids, e0, m0, settings,
                                  steplog.for_part(model=name, restart=restart, batch=index),
                                  cfg.log_every, bar)
                steplog.next_part()
                scores = evaluate(model, tokenizer, chunk_ids, result.e, result.m, cfg.method,
                                  cfg.arrangement, cfg.batch_size, bos)
                for row, t in enumerate(chunk):
                    tries[(restart, t)] = {
                        "e": result.e[row],
                        "m": None if result.m is None else result.m[0 if cfg.share_m else row],
                        "score": scores[row], "steps": int(result.steps_run[row]),
                        "training_accuracy": float(result.best_accuracy[row]),
                        "best_step": int(result.best_step[row]), "stopped": result.stopped[row]}
                rounds.append(([(t, restart) for t in chunk], result))
    bar.close()
    seconds = time.time() - start
    if ranks.parallel:  # rank 0 takes every rank's texts; the others are done
        gathered = ranks.gather((tries, rounds, seconds))
        if not ranks.main:
            return {}
        tries = {key: value for part, _, _ in gathered for key, value in part.items()}
        rounds = [item for _, part, _ in gathered for item in part]
        seconds = max(part for _, _, part in gathered)
    tries = [[tries[(r, t)] for t in range(len(targets))] for r in range(cfg.restarts)]

    chosen = choose_restarts(tries, cfg)
    records = text_records(targets, tries, chosen, cfg)
    if cfg.baseline:
        start_id = start_token(tokenizer, model)
        prior = no_memory(model, [r["target_ids"] for r in records], start_id, cfg.batch_size)
        for record, without in zip(records, prior):
            record.update(gains(record, without))
    analyses = analyse(model, tokenizer, targets, tries, records, cfg, bos)
    if cfg.transfer_texts:
        from rl_onoff.proto.analysis import shared_m_transfer

        new = [tokenizer(t, add_special_tokens=False)["input_ids"][:cfg.max_tokens]
               for t in cfg.transfer_texts]
        analyses["shared_m_transfer"] = shared_m_transfer(
            model, tokenizer, new, tries[chosen[0]][0]["m"][None], settings, cfg.seed,
            cfg.batch_size)
    save_vectors(out / "proto.npz", records, tries, chosen, cfg, name, bos,
                 model.get_input_embeddings().weight.shape[1])
    io.write_json(out / "texts.json", records)
    curves, lr = stack_curves(rounds, cfg.restarts, len(targets))
    io.save_npz(out / "history.npz", {**curves, "lr": lr})
    emb_norm = embedding_norm(model)
    summary = summarize(records, tries, cfg, stage.models[name], results, seconds,
                        int(sum(len(r.lr) for _, r in rounds)), emb_norm)
    summary["analyses"] = analyses
    io.write_json(out / "summary.json", summary)
    write_plots(out, stage.run, curves, lr, records, tokenizer, cfg, name, emb_norm)
    print(format_summary(summary))
    print(f"wrote {out}/proto.npz, texts.json, summary.json and the plots")
    return summary


def choose_restarts(tries: list[list[dict]], cfg: ProtoConfig) -> list[int]:
    """Per text, the restart whose vectors do best in the clean pass (longest solved prefix
    first when searching capacity). A shared m ties all texts to one restart: the best on
    average."""
    def key(t: dict):
        return (t["capacity"] if cfg.sweep else 0, t["score"]["accuracy"],
                t["score"]["mean_target_prob"])
    if cfg.share_m:
        best = max(range(len(tries)), key=lambda r: np.mean([key(t)[1:] for t in tries[r]], 0)
                   .tolist())
        return [best] * len(tries[0])
    return [max(range(len(tries)), key=lambda r: key(tries[r][t])) for t in range(len(tries[0]))]


def where_it_broke(record: dict) -> dict:
    """For the error map of a capacity search: the clean pass of the shortest length the
    text's kept restart failed (the record itself when it reconstructed the whole text)."""
    levels = next(run["levels"] for run in record["restarts"] if run["restart"] == record["restart"])
    failed = [lv for lv in levels if "evaluation" in lv]
    if not failed:
        return record
    note = f"exact up to {record['capacity']} tokens; " if record["capacity"] else ""
    return {**min(failed, key=lambda lv: lv["length"])["evaluation"], "index": record["index"],
            "kind": record["kind"], "full_length": record["full_length"], "note": note}


def text_records(targets, tries, chosen, cfg: ProtoConfig) -> list[dict]:
    records = []
    for t, target in enumerate(targets):
        best = tries[chosen[t]][t]
        record = {"index": t, "kind": "random" if target.source.get("kind") == "random" else "target",
                  "source": target.source, "text": target.text,
                  "full_length": len(target.token_ids), "restart": chosen[t],
                  "steps": best["steps"], "best_step": best["best_step"],
                  "stopped": best["stopped"], "training_accuracy": best["training_accuracy"],
                  **best["score"]}
        record["restarts"] = [{"restart": r, "accuracy": run[t]["score"]["accuracy"],
                               "length": run[t]["score"]["length"],
                               "status": run[t]["score"]["status"], "steps": run[t]["steps"],
                               "best_step": run[t]["best_step"], "stopped": run[t]["stopped"],
                               **({"capacity": run[t]["capacity"], "levels": run[t]["levels"]}
                                  if cfg.sweep else {})}
                              for r, run in enumerate(tries)]
        if cfg.sweep:
            per_restart = [run["capacity"] for run in record["restarts"]]
            record.update(capacity=best["capacity"],
                          capacity_median=float(np.median(per_restart)),
                          capacity_min=min(per_restart), capacity_max=max(per_restart))
        records.append(record)
    return records


def save_vectors(path, records, tries, chosen, cfg: ProtoConfig, model_name: str,
                 bos: int | None, d: int) -> None:
    """proto.npz: the kept vectors and the exact token ids they reproduce (no pickles)."""
    rows = [tries[chosen[t]][t] for t in range(len(records))]
    lengths = np.array([r["length"] for r in records], dtype=np.int64)
    ids = np.full((len(rows), int(lengths.max())), -1, dtype=np.int64)
    for i, r in enumerate(records):
        ids[i, :lengths[i]] = r["target_ids"]
    if rows[0]["m"] is None:
        m = np.zeros((0, d), dtype=np.float32)
    elif cfg.share_m:
        m = rows[0]["m"].numpy()[None]
    else:
        m = np.stack([r["m"].numpy() for r in rows])
    io.save_npz(path, {"e": np.stack([r["e"].numpy() for r in rows]), "m": m, "token_ids": ids,
                       "lengths": lengths, "restart": np.array(chosen, dtype=np.int64),
                       "kind": np.array([r["kind"] for r in records]),
                       "method": np.array(cfg.method), "arrangement": np.array(cfg.arrangement),
                       "bos": np.array(-1 if bos is None else bos, dtype=np.int64),
                       "model": np.array(model_name)})


def stack_curves(rounds, restarts: int, texts: int) -> tuple[dict, np.ndarray]:
    """Curves as (restarts x steps x texts) arrays: each (text, restart)'s optimisations end
    to end, NaN-padded; the learning rate of the longest optimisation."""
    used = {}
    for rows, result in rounds:
        for i, cell in enumerate(rows):
            used[cell] = used.get(cell, 0) + int(result.steps_run[i])
    longest = max(used.values())
    names = rounds[0][1].curves.keys()
    curves = {k: np.full((restarts, longest, texts), np.nan) for k in names}
    offset = dict.fromkeys(used, 0)
    for rows, result in rounds:
        for i, (t, r) in enumerate(rows):
            n = int(result.steps_run[i])
            for name, values in result.curves.items():
                curves[name][r, offset[(t, r)]:offset[(t, r)] + n, t] = values[:n, i]
            offset[(t, r)] += n
    return curves, max((r.lr for _, r in rounds), key=len)


def analyse(model, tokenizer, targets, tries, records, cfg: ProtoConfig, bos) -> dict:
    """The paper's analyses that need no further training: cosine similarity of the kept e
    (and m) across texts and across restarts of one text, and the clean accuracy along the
    straight line between two restarts' solutions of the same text."""
    from rl_onoff.proto.analysis import cosine_summary, interpolation

    kept = [tries[r["restart"]][r["index"]] for r in records]
    out = {"cosine_e": cosine_summary([k["e"] for k in kept], [r["kind"] for r in records])}
    if kept[0]["m"] is not None and not cfg.share_m:
        out["cosine_m"] = cosine_summary([k["m"] for k in kept], [r["kind"] for r in records])
    if len(tries) >= 2 and cfg.interpolation_points and not cfg.share_m:
        out["interpolation"] = interpolation(model, tokenizer, [t.token_ids for t in targets],
                                             tries, cfg, bos)
    return out


def _stats(values) -> dict | None:
    values = np.asarray(values, dtype=float)
    if not len(values):
        return None
    return {"mean": float(values.mean()), "median": float(np.median(values)),
            "min": float(values.min()), "max": float(values.max())}


def group_summary(records: list[dict], cfg: ProtoConfig) -> dict:
    """The numbers of one group of texts (targets, or the random controls)."""
    accuracy = np.array([r["accuracy"] for r in records])
    lengths = np.array([r["length"] for r in records])
    statuses = [r["status"] for r in records]
    out = {"num_texts": len(records),
           "mean_full_length": float(np.mean([r["full_length"] for r in records])),
           "mean_length": float(lengths.mean()), "mean_accuracy": float(accuracy.mean()),
           "token_accuracy": float((accuracy * lengths).sum() / lengths.sum()),
           "mean_generated_accuracy": float(np.mean([r["generated_accuracy"] for r in records])),
           "status": {s: statuses.count(s) for s in ("success", "partial", "failed")},
           "best_step": _stats([r["best_step"] for r in records]),
           "steps": _stats([r["steps"] for r in records]),
           "stopped": {s: sum(r["stopped"] == s for r in records)
                       for s in ("exact", "plateau", "cap")}}
    if "baseline_accuracy" in records[0]:
        out.update({"mean_baseline_accuracy": float(np.mean([r["baseline_accuracy"]
                                                             for r in records])),
                    "information_gain_bits": _stats([r["information_gain_bits"] for r in records]),
                    "token_gain": _stats([r["token_gain"] for r in records])})
    if cfg.sweep:
        best = [r["capacity"] for r in records]
        out["capacity"] = {
            "per_text": best, "median_over_restarts": [r["capacity_median"] for r in records],
            "per_text_and_restart": [[run["capacity"] for run in r["restarts"]] for r in records],
            "max": int(max(best)), "median": float(np.median(best)), "mean": float(np.mean(best)),
            "median_of_restart_medians": float(np.median([r["capacity_median"] for r in records])),
            "spread": float(np.mean([r["capacity_max"] - r["capacity_min"] for r in records])),
            "whole_text": sum(r["capacity"] == r["full_length"] for r in records)}
    return out


def summarize(records, tries, cfg: ProtoConfig, model_info: dict, results, seconds: float,
              steps: int, emb_norm: float) -> dict:
    groups = {kind: [r for r in records if r["kind"] == kind] for kind in ("target", "random")}
    summary = {
        "model": model_info, "method": cfg.method, "arrangement": cfg.arrangement,
        "share_m": cfg.share_m, "init": cfg.init, "step_cap": cfg.steps,
        "patience": cfg.patience, "max_grad_norm": cfg.max_grad_norm,
        "restarts": cfg.restarts, "sweep": cfg.sweep, "sweep_start": cfg.sweep_start,
        "targets": {"source": "yaml" if cfg.texts else str(cfg.input),
                    "source_model": results["model"]["name"] if results else None,
                    "select": None if cfg.texts else cfg.select, "tokens": cfg.tokens,
                    "max_tokens": cfg.max_tokens,
                    "matches_sampled": None if cfg.texts else
                    float(np.mean([r["source"]["matches_sampled"] for r in groups["target"]]))},
        **group_summary(groups["target"], cfg),
        "random_control": group_summary(groups["random"], cfg) if groups["random"] else None,
        "thresholds": {"success": SUCCESS, "partial": PARTIAL},
        "seconds": seconds, "optimiser_steps_per_second": steps / seconds,
        "embedding_norm": emb_norm,
        "e_norm": float(np.mean([tries[r["restart"]][r["index"]]["e"].norm().item()
                                 for r in records])),
        "m_norm": None if tries[0][0]["m"] is None else float(np.mean(
            [tries[r["restart"]][r["index"]]["m"].norm().item() for r in records])),
    }
    gaps = [abs(r["training_accuracy"] - r["accuracy"]) for r in records]
    summary["max_training_vs_clean_gap"] = float(max(gaps))
    return summary


def write_plots(out, run, curves, lr, records, tokenizer, cfg: ProtoConfig, model: str,
                emb_norm: float) -> None:
    from rl_onoff.proto import plots

    lines = {k: v.transpose(1, 0, 2).reshape(v.shape[1], -1) for k, v in curves.items()}
    what = f"{cfg.method}" + (f", {cfg.arrangement}" if cfg.method == "one_step" else "")
    plots.training_curves(lines, lr, emb_norm, cfg.max_grad_norm, model,
                          f"04-proto training, {model} ({what}; {len(records)} texts x "
                          f"{cfg.restarts} restarts{', capacity search' if cfg.sweep else ''})",
                          out / "training_curves.png",
                          "step (each text's attempts end to end)" if cfg.sweep else "step")
    shown = [where_it_broke(r) for r in records[:cfg.map_texts]] if cfg.sweep \
        else records[:cfg.map_texts]
    plots.error_map(shown, tokenizer,
                    f"04-proto reconstruction, {model}: target tokens by their probability"
                    + (" (capacity search: at the shortest length each text failed)"
                       if cfg.sweep else ""),
                    out / "error_map.png")
    names = ["training_curves", "error_map"]
    if cfg.sweep:
        plots.capacity_plot(records, model, SUCCESS, out / "capacity.png")
        names.append("capacity")
    for name in names:
        run.log_image(name, out / f"{name}.png")


def format_summary(summary: dict) -> str:
    kept = " (the kept prefixes)" if "capacity" in summary else ""
    statuses = ", ".join(f"{k} {v}" for k, v in summary["status"].items())
    lines = [
        (f"04-proto {summary['model']['name']}: {summary['num_texts']} texts, "
         f"{summary['mean_full_length']:.1f} tokens on average, {summary['method']}; "
         f"evaluated: {summary['mean_length']:.1f} tokens{kept}"),
        (f"  clean accuracy {summary['mean_accuracy']:.3f} (tokens {summary['token_accuracy']:.3f};"
         f" greedy generation {summary['mean_generated_accuracy']:.3f}); {statuses}"),
        f"  best step median {summary['best_step']['median']:.0f} (cap {summary['step_cap']}); "
        "stopped: " + ", ".join(f"{k} {v}" for k, v in summary["stopped"].items())]
    if "information_gain_bits" in summary:
        lines.append(f"  no memory: accuracy {summary['mean_baseline_accuracy']:.3f}; "
                     f"information gain {summary['information_gain_bits']['mean']:.1f} bits/text")
    if "capacity" in summary:
        cap = summary["capacity"]
        lines.append(f"  capacity (longest prefix at >= {SUCCESS}, best of {summary['restarts']} "
                     f"restarts): max {cap['max']}, median {cap['median']:.1f}; median over "
                     f"restarts {cap['median_of_restart_medians']:.1f}, mean spread "
                     f"{cap['spread']:.1f}; whole text {cap['whole_text']}/{summary['num_texts']}")
    if summary["random_control"]:
        rc = summary["random_control"]
        lines.append(f"  random-token control: accuracy {rc['mean_accuracy']:.3f}"
                     + (f", capacity median {rc['capacity']['median']:.1f}"
                        if "capacity" in rc else ""))
    lines.append(f"  {summary['seconds']:.1f} s, {summary['optimiser_steps_per_second']:.1f} "
                 "steps/s")
    return "\n".join(lines)
