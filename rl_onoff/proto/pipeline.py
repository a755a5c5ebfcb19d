"""04-proto end to end: targets, optimisation (or the capacity sweep), clean evaluation, files.

Outputs in `output_dir`:
    proto.npz            e (texts x d), m (texts x d; 1 x d shared; 0 x d when unused),
                         token_ids (texts x longest, -1 padded), lengths, restart, method,
                         arrangement, model: enough to rebuild the inputs and check
    texts.json           per text: target vs reconstruction, accuracy, first error,
                         per-position probability and rank, every restart (and sweep level)
    summary.json         the run's numbers
    history.npz          per-step curves (restarts x steps x texts), NaN once a text stopped
    training_curves.png, error_map.png, capacity.png (sweep only), run_config.json
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from rl_onoff import io
from rl_onoff.config import Config, ConfigError, ProtoConfig
from rl_onoff.proto.evaluate import PARTIAL, SUCCESS
from rl_onoff.proto.targets import SECTION, build_targets, load_samples, results_path
from rl_onoff.sampling import resolve_path


class StepLog:
    """Numbers the run record's steps across restarts, batches and sweep levels."""

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


def with_model(config: Config, results: dict | None) -> Config:
    """The config with `04_proto.model` resolved: null means the model that wrote 00's
    samples (or `defaults.model` when the texts come from the YAML)."""
    cfg: ProtoConfig = config[SECTION]
    if cfg.model is not None:
        return config
    if results is None:
        cfg = dataclasses.replace(cfg, model=config.defaults.model)
    else:
        cfg = dataclasses.replace(cfg, model=results["model"]["name"],
                                  revision=cfg.revision or results["model"].get("revision"))
    return dataclasses.replace(config, sections={**config.sections, SECTION: cfg})


def run_proto(config: Config) -> dict:
    """Run 04-proto as configured; return the summary it wrote."""
    import torch
    from tqdm import tqdm

    from rl_onoff import tracking
    from rl_onoff.models import describe, load_model
    from rl_onoff.proto.evaluate import evaluate
    from rl_onoff.proto.optimize import Settings, embedding_norm, initial_vectors, optimise
    from rl_onoff.proto.sweep import capacity_sweep, levels_for

    results = None if config[SECTION].texts else load_samples(config[SECTION])
    config = with_model(config, results)
    cfg: ProtoConfig = config[SECTION]
    model_name = cfg.model
    torch.manual_seed(cfg.seed)
    model, tokenizer = load_model(model_name, cfg.device, cfg.dtype, revision=cfg.revision,
                                  trust_remote_code=cfg.trust_remote_code)
    model.requires_grad_(False)
    model_info = describe(model, model_name)
    targets = build_targets(cfg, tokenizer, results)
    if cfg.share_m and len(targets) > cfg.batch_size:
        raise ConfigError(f"{SECTION}.share_m: one m is learned for a whole batch; raise "
                          f"`{SECTION}.batch_size` to at least {len(targets)}, the number of texts")
    settings = Settings.from_config(cfg)
    chunks = [list(range(i, min(i + cfg.batch_size, len(targets))))
              for i in range(0, len(targets), cfg.batch_size)]
    out = resolve_path(cfg.output_dir)
    levels = [len(levels_for(len(t.token_ids), cfg.sweep_start)) if cfg.sweep else 1
              for t in targets]
    total = cfg.restarts * cfg.steps * sum(max(levels[t] for t in chunk) for chunk in chunks)

    with tracking.start_run("04-proto", config, SECTION, output_dir=out) as run:
        tracking.write_provenance(out, config, SECTION, run, model_info)
        bar = tqdm(total=total, desc="04-proto", unit="step")
        steplog = StepLog(run, cfg.log_every)
        start = time.time()
        tries = []      # per restart: per text {e, m, score, ...}
        parts = []      # per restart: [(chunk, Result)]
        for restart in range(cfg.restarts):
            per_text, restart_parts = [None] * len(targets), []
            for index, chunk in enumerate(chunks):
                e0, m0 = initial_vectors(model, settings, chunk, cfg.seed, restart)
                ids = [targets[t].token_ids for t in chunk]
                log = steplog.for_part(restart=restart, batch=index)
                if cfg.sweep:
                    result, kept, tried = capacity_sweep(model, tokenizer, ids, e0, m0, settings,
                                                         cfg.sweep_start, log, cfg.log_every, bar)
                else:
                    result = optimise(model, ids, e0, m0, settings, log, cfg.log_every, bar)
                    kept, tried = [len(i) for i in ids], None
                steplog.next_part()
                scores = evaluate(model, tokenizer, [i[:n] for i, n in zip(ids, kept)],
                                  result.e, result.m, cfg.method, cfg.arrangement, cfg.batch_size)
                for row, t in enumerate(chunk):
                    per_text[t] = {
                        "e": result.e[row],
                        "m": None if result.m is None else result.m[0 if cfg.share_m else row],
                        "score": scores[row], "steps": int(result.steps_run[row]),
                        "training_accuracy": float(result.best_accuracy[row]),
                        "best_step": int(result.best_step[row]),
                        "levels": tried[row] if tried else None}
                restart_parts.append((chunk, result))
            tries.append(per_text)
            parts.append(restart_parts)
        bar.close()
        seconds = time.time() - start

        chosen = choose_restarts(tries, cfg)
        records = text_records(targets, tries, chosen, cfg)
        save_vectors(out / "proto.npz", targets, tries, chosen, cfg, model_name,
                     model.get_input_embeddings().weight.shape[1])
        io.write_json(out / "texts.json", records)
        curves, lr = stack_curves(parts, len(targets))
        io.save_npz(out / "history.npz", {**curves, "lr": lr})
        emb_norm = embedding_norm(model)
        summary = summarize(records, tries, cfg, model_info, results, seconds,
                            int(sum(len(r.lr) for p in parts for _, r in p)), emb_norm)
        io.write_json(out / "summary.json", summary)
        write_plots(out, run, curves, lr, records, tokenizer, cfg, model_name, emb_norm)
        print(format_summary(summary))
        print(f"wrote {out}/proto.npz, texts.json, summary.json and the plots")
        run.finish(summary=summary)
    return summary


def choose_restarts(tries: list[list[dict]], cfg: ProtoConfig) -> list[int]:
    """Per text, the restart whose vectors do best in the clean pass (longest solved prefix
    first when sweeping). A shared m ties all texts to one restart: the best on average."""
    def key(t: dict):
        return (t["score"]["length"] * (t["score"]["accuracy"] >= SUCCESS) if cfg.sweep else 0,
                t["score"]["accuracy"], t["score"]["mean_target_prob"])
    if cfg.share_m:
        best = max(range(len(tries)), key=lambda r: np.mean([key(t)[1:] for t in tries[r]], 0)
                   .tolist())
        return [best] * len(tries[0])
    return [max(range(len(tries)), key=lambda r: key(tries[r][t])) for t in range(len(tries[0]))]


def capacity(levels: list[dict]) -> int:
    """The longest prefix the sweep reconstructed (0: not even the shortest)."""
    return max((lv["length"] for lv in levels if lv["accuracy"] >= SUCCESS), default=0)


def where_it_broke(record: dict) -> dict:
    """For the error map of a sweep: the clean pass of the first prefix the text's kept
    restart failed (the record itself when it reconstructed the whole text)."""
    levels = next(run["levels"] for run in record["restarts"] if run["restart"] == record["restart"])
    if "evaluation" not in levels[-1]:
        return record
    note = f"exact up to {record['capacity']} tokens; " if record["capacity"] else ""
    return {**levels[-1]["evaluation"], "index": record["index"],
            "full_length": record["full_length"], "note": note}


def text_records(targets, tries, chosen, cfg: ProtoConfig) -> list[dict]:
    records = []
    for t, target in enumerate(targets):
        best = tries[chosen[t]][t]
        record = {"index": t, "source": target.source, "text": target.text,
                  "full_length": len(target.token_ids), "restart": chosen[t],
                  "steps": best["steps"], **best["score"]}
        if not cfg.sweep:
            record.update(training_accuracy=best["training_accuracy"], best_step=best["best_step"])
        record["restarts"] = [{"restart": r, "accuracy": run[t]["score"]["accuracy"],
                               "status": run[t]["score"]["status"], "steps": run[t]["steps"],
                               **({"capacity": capacity(run[t]["levels"]),
                                   "levels": run[t]["levels"]} if cfg.sweep else {})}
                              for r, run in enumerate(tries)]
        if cfg.sweep:
            record["capacity"] = capacity(best["levels"])
        records.append(record)
    return records


def save_vectors(path, targets, tries, chosen, cfg: ProtoConfig, model_name: str, d: int) -> None:
    """proto.npz: the kept vectors and the exact token ids they reproduce (no pickles)."""
    rows = [tries[chosen[t]][t] for t in range(len(targets))]
    lengths = np.array([r["score"]["length"] for r in rows], dtype=np.int64)
    ids = np.full((len(rows), int(lengths.max())), -1, dtype=np.int64)
    for i, r in enumerate(rows):
        ids[i, :lengths[i]] = r["score"]["target_ids"]
    if rows[0]["m"] is None:
        m = np.zeros((0, d), dtype=np.float32)
    elif cfg.share_m:
        m = rows[0]["m"].numpy()[None]
    else:
        m = np.stack([r["m"].numpy() for r in rows])
    io.save_npz(path, {"e": np.stack([r["e"].numpy() for r in rows]), "m": m, "token_ids": ids,
                       "lengths": lengths, "restart": np.array(chosen, dtype=np.int64),
                       "method": np.array(cfg.method), "arrangement": np.array(cfg.arrangement),
                       "model": np.array(model_name)})


def stack_curves(parts, texts: int) -> tuple[dict, np.ndarray]:
    """Curves as (restarts x steps x texts) arrays, NaN-padded; the longest part's lr."""
    longest = max(len(r.lr) for p in parts for _, r in p)
    names = parts[0][0][1].curves.keys()
    curves = {k: np.full((len(parts), longest, texts), np.nan) for k in names}
    lr = max((r.lr for p in parts for _, r in p), key=len)
    for restart, restart_parts in enumerate(parts):
        for chunk, result in restart_parts:
            for name, values in result.curves.items():
                curves[name][restart][:len(values), chunk] = values
    return curves, lr


def summarize(records, tries, cfg: ProtoConfig, model_info: dict, results, seconds: float,
              steps: int, emb_norm: float) -> dict:
    accuracy = np.array([r["accuracy"] for r in records])
    lengths = np.array([r["length"] for r in records])
    statuses = [r["status"] for r in records]
    summary = {
        "model": model_info, "method": cfg.method, "arrangement": cfg.arrangement,
        "share_m": cfg.share_m, "init": cfg.init, "steps_budget": cfg.steps,
        "restarts": cfg.restarts, "num_texts": len(records),
        "targets": {"source": "yaml" if cfg.texts else str(results_path(cfg)),
                    "source_model": results["model"]["name"] if results else None,
                    "select": None if cfg.texts else cfg.select, "tokens": cfg.tokens,
                    "max_tokens": cfg.max_tokens,
                    "matches_sampled": None if cfg.texts else
                    float(np.mean([r["source"]["matches_sampled"] for r in records]))},
        "mean_full_length": float(np.mean([r["full_length"] for r in records])),
        "mean_length": float(lengths.mean()), "mean_accuracy": float(accuracy.mean()),
        "token_accuracy": float((accuracy * lengths).sum() / lengths.sum()),
        "status": {s: statuses.count(s) for s in ("success", "partial", "failed")},
        "thresholds": {"success": SUCCESS, "partial": PARTIAL},
        "mean_steps": float(np.mean([r["steps"] for r in records])),
        "seconds": seconds, "optimiser_steps_per_second": steps / seconds,
        "embedding_norm": emb_norm,
        "e_norm": float(np.mean([tries[r["restart"]][r["index"]]["e"].norm().item()
                                 for r in records])),
        "m_norm": None if tries[0][0]["m"] is None else float(np.mean(
            [tries[r["restart"]][r["index"]]["m"].norm().item() for r in records])),
    }
    if not cfg.sweep:
        gaps = [abs(r["training_accuracy"] - r["accuracy"]) for r in records]
        summary["max_training_vs_clean_gap"] = float(max(gaps))
    else:
        per_run = [run["capacity"] for r in records for run in r["restarts"]]
        best = [r["capacity"] for r in records]
        summary["capacity"] = {
            "per_text": best, "per_text_and_restart": [[run["capacity"] for run in r["restarts"]]
                                                       for r in records],
            "max": int(max(best)), "median": float(np.median(best)), "mean": float(np.mean(best)),
            "mean_over_restarts": float(np.mean(per_run)),
            "whole_text": sum(r["capacity"] == r["full_length"] for r in records),
            "sweep_start": cfg.sweep_start}
    return summary


def write_plots(out, run, curves, lr, records, tokenizer, cfg: ProtoConfig, model: str,
                emb_norm: float) -> None:
    from rl_onoff.proto import plots

    lines = {k: v.transpose(1, 0, 2).reshape(v.shape[1], -1) for k, v in curves.items()}
    what = f"{cfg.method}" + (f", {cfg.arrangement}" if cfg.method == "one_step" else "")
    plots.training_curves(lines, lr, emb_norm, cfg.max_grad_norm, model,
                          f"04-proto training, {model} ({what}; {len(records)} texts x "
                          f"{cfg.restarts} restarts{', capacity sweep' if cfg.sweep else ''})",
                          out / "training_curves.png",
                          "step (sweep levels end to end)" if cfg.sweep else "step")
    shown = [where_it_broke(r) for r in records[:cfg.map_texts]] if cfg.sweep \
        else records[:cfg.map_texts]
    plots.error_map(shown, tokenizer,
                    f"04-proto reconstruction, {model}: target tokens by their probability"
                    + (" (sweep: at the first length each text failed)" if cfg.sweep else ""),
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
    lines = [f"04-proto: {summary['num_texts']} texts, {summary['mean_full_length']:.1f} tokens on "
             f"average, {summary['method']}; evaluated: {summary['mean_length']:.1f} tokens{kept}",
             f"  clean accuracy {summary['mean_accuracy']:.3f} "
             f"(tokens {summary['token_accuracy']:.3f}); {statuses}",
             f"  {summary['seconds']:.1f} s, {summary['optimiser_steps_per_second']:.1f} steps/s"]
    if "capacity" in summary:
        cap = summary["capacity"]
        lines.append(f"  capacity (longest prefix at >= {SUCCESS}): max {cap['max']}, median "
                     f"{cap['median']:.1f}, whole text {cap['whole_text']}/{summary['num_texts']}")
    return "\n".join(lines)
