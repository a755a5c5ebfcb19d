"""05-entropy's modes: which runs to make, where they land, what is concluded from them.

Every mode writes to `<output_dir>/<mode>/<name>_<timestamp>/`: the resolved
config (run_config.json), one `runs/<id>/results.json` per run (or its
`error.json`: a failed run is recorded and the others go on), `summary.json`
with the analysis and verdicts, and PNG plots.
"""

from __future__ import annotations

import dataclasses
import traceback
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Callable

import numpy as np

from rl_onoff import io
from rl_onoff.config import Config, ConfigError, EntropyConfig
from rl_onoff.entropy import analysis, plots
from rl_onoff.entropy.batches import PromptSet, SamplingSpec, batch_seed, sample_batch
from rl_onoff.entropy.estimators import KINDS
from rl_onoff.entropy.probe import PhaseTimer, ProbeSettings, UpdateBatch, prepare_update, probe
from rl_onoff.entropy.update import OptimizerSpec, Updater

SECTION, SCRIPT = "05_entropy", "05-entropy"


@dataclass
class Session:
    """What every run of a mode shares: the policy, the prompts, the optimizer, the settings."""
    cfg: EntropyConfig
    model: object
    tokenizer: object
    prompts: PromptSet
    updater: Updater
    eos_ids: list[int]
    model_info: dict
    log: Callable[[str], None] | None = None   # per-phase lines (debug)
    save_gradients: bool = False

    @property
    def sampling(self) -> SamplingSpec:
        c = self.cfg
        return SamplingSpec(c.num_samples, c.sampling.temperature, c.sampling.max_new_tokens,
                            c.batch_size)

    @property
    def settings(self) -> ProbeSettings:
        return ProbeSettings(lr=self.cfg.lr, temperature=self.cfg.sampling.temperature,
                             advantage_std=self.cfg.advantage_std)

    def sample(self, role: str, index: int, size: int, score: bool, timer: PhaseTimer):
        with timer(f"sample_{role.lower()}"):
            return sample_batch(self.model, self.tokenizer, self.prompts, size, self.sampling,
                                batch_seed(self.cfg.seed, role, index), self.eos_ids, score)

    def update(self, index: int, size: int, timer: PhaseTimer) -> UpdateBatch:
        groups = self.sample("U", index, size, True, timer)
        return prepare_update(self.model, groups, self.updater, self.settings, timer)


def open_session(cfg: EntropyConfig) -> Session:
    """Load the policy (and LoRA adapter), the dataset's prompts and the optimizer."""
    from rl_onoff.data import load_dataset
    from rl_onoff.entropy.policy import trainable
    from rl_onoff.generation import eos_token_ids
    from rl_onoff.models import describe, load_model
    from rl_onoff.tasks import build_prompt, encode_prompt

    records = load_dataset(cfg.dataset.name, cfg.dataset.split, **cfg.dataset.options())
    largest = {"batch-scaling": max(cfg.batch_u, *cfg.batch_scaling.batch_e_values),
               "debug": max(cfg.debug.batch_u, cfg.debug.batch_e, *cfg.debug.batch_e_values)
               }.get(cfg.mode, max(cfg.batch_e, cfg.batch_u))
    if len(records) < largest:
        raise ConfigError(f"{SECTION}.dataset: {len(records)} records, but a batch asks for "
                          f"{largest} prompts; raise `num_examples` or lower the batch sizes")
    model, tokenizer = load_model(cfg.model, cfg.device, cfg.dtype, revision=cfg.revision,
                                  trust_remote_code=cfg.trust_remote_code)
    if cfg.adapter:
        from peft import PeftModel
        model = PeftModel.from_pretrained(model, cfg.adapter, is_trainable=True)
    if cfg.precision == "float64":
        model = model.double()
    task = cfg.task
    prompt_ids = [encode_prompt(build_prompt(r["question"], tokenizer, task.template, task.format,
                                             task.system_prompt, task.enable_thinking, task.prefill),
                                tokenizer, task.template) for r in records]
    prompts = PromptSet(prompt_ids, [r["answer"] for r in records], task.format, task.ignore_think,
                        task.reward_timeout)
    spec = OptimizerSpec(cfg.optimizer, tuple(cfg.betas), cfg.eps, cfg.weight_decay,
                         cfg.optimizer_state)
    try:
        updater = Updater(trainable(model), spec)
    except ValueError as err:
        raise ConfigError(f"{SECTION}.optimizer_state: {err}") from err
    info = describe(model, cfg.model)
    info["adapter"] = cfg.adapter
    info["trainable_parameters"] = sum(p.numel() for p in trainable(model))
    return Session(cfg, model, tokenizer, prompts, updater, eos_token_ids(model, tokenizer), info)


# ---------------------------------------------------------------------------
# One run, failure-isolated


def attempt(run_dir: Path, work: Callable[[], dict]) -> dict | None:
    """Do one run; write its results.json, or its error.json and return None."""
    from tqdm import tqdm

    try:
        result = work()
    except Exception as err:  # noqa: BLE001  (any failure of one run is recorded, the rest go on)
        io.write_json(run_dir / "error.json", {"error": f"{type(err).__name__}: {err}",
                                               "traceback": traceback.format_exc()})
        tqdm.write(f"run {run_dir.name} failed: {type(err).__name__}: {err} "
                   f"(details in {run_dir / 'error.json'})")
        return None
    arrays = result.pop("_arrays", None)
    if arrays:
        io.save_npz(run_dir / "gradients.npz",
                    {k: v.detach().float().cpu().numpy() for k, v in arrays.items()})
    io.write_json(run_dir / "results.json", result)
    return result


def failure(run_dir: Path) -> str:
    """The error a failed run recorded, for the message of a mode that cannot go on without it."""
    error = io.read_json(run_dir / "error.json")["error"]
    return f"the run failed: {error} (traceback in {run_dir / 'error.json'})"


def one_run(s: Session, run_dir: Path, *, e_index: int, batch_e: int, u_index: int = 0,
            update: UpdateBatch | None = None, jackknife: bool = True,
            settings: ProbeSettings | None = None, bar=None) -> dict | None:
    """Sample what the run needs (E, and U unless given), then probe; None if it failed."""
    settings = settings or s.settings

    def work() -> dict:
        timer = PhaseTimer(s.log, bar)
        if s.cfg.share_batches:   # E is the U batch: the biased estimator, on purpose
            upd = prepare_update(s.model, s.sample("E", e_index, batch_e, True, timer),
                                 s.updater, settings, timer)
            e_groups = upd.groups
        else:
            upd = update or s.update(u_index, s.cfg.batch_u, timer)
            e_groups = s.sample("E", e_index, batch_e, False, timer)
        result = probe(s.model, upd, e_groups, s.updater, settings, timer, jackknife=jackknife,
                       keep_gradients=s.save_gradients)
        result["run"] = {"id": run_dir.name, "e_index": e_index,
                         "u_index": None if s.cfg.share_batches else u_index,
                         "u_fixed": update is not None, "shared_batches": s.cfg.share_batches}
        return result

    if s.log:
        s.log(f"run {run_dir.name}")
    return attempt(run_dir, work)


def fixed_update(s: Session, out: Path) -> UpdateBatch:
    """The U batch shared by the runs that hold U fixed: U index 0 (one_run's default)."""
    timer = PhaseTimer(s.log)
    update = s.update(0, s.cfg.batch_u, timer)
    io.write_json(out / "fixed_u.json", {"questions": [g.question for g in update.groups],
                                         "rewards": [g.rewards for g in update.groups],
                                         "timings": timer.seconds})
    return update


# ---------------------------------------------------------------------------
# Modes


def mode_single(s: Session, out: Path, run) -> dict:
    from tqdm import tqdm

    bar = tqdm(total=7, desc=f"{SCRIPT} single", unit="phase")
    result = one_run(s, out / "runs" / "run-000", e_index=0, batch_e=s.cfg.batch_e, bar=bar)
    bar.close()
    if result is None:
        raise RuntimeError(failure(out / "runs" / "run-000"))
    print(format_single(result, s))
    run.log({f"{name}_{k}": result[name][k]["value"] for name in ("delta_h1", "delta_h_true")
             for k in KINDS})
    path = out / "single.png"
    plots.single(result, path, s.cfg.model)
    run.log_image("single", path)
    return {"result": {k: result[k] for k in ("entropy", "delta_h1", "delta_h_true", "difference",
                                              "ratio", "update", "timings")},
            "agrees_within_se": {k: abs(result["difference"][k]["value"])
                                 <= 2 * result["delta_h1"][k]["se_cond"] for k in KINDS}}


def mode_eta_sweep(s: Session, out: Path, run) -> dict:
    from tqdm import tqdm

    lrs = sorted(s.cfg.eta_sweep.lrs)
    settings = dataclasses.replace(s.settings, lr=lrs[0], sweep_lrs=tuple(lrs[1:]))
    bar = tqdm(total=5 + len(lrs), desc=f"{SCRIPT} eta-sweep", unit="phase")
    result = one_run(s, out / "runs" / "run-000", e_index=0, batch_e=s.cfg.batch_e,
                     jackknife=False, settings=settings, bar=bar)
    bar.close()
    if result is None:
        raise RuntimeError(failure(out / "runs" / "run-000"))
    points = [{"lr": lrs[0], "delta_h1": {k: v["value"] for k, v in result["delta_h1"].items()},
               "delta_h_true": result["delta_h_true"]}, *result["sweep"]]
    lin = {kind: analysis.linearity([p["lr"] for p in points],
                                    [p["delta_h_true"][kind]["value"] for p in points],
                                    [p["delta_h1"][kind] for p in points], s.cfg.eta_sweep.tolerance)
           for kind in KINDS}
    for kind in KINDS:
        a = lin[kind]
        print(f"{kind:>8}: linear (within {a['tolerance']:.0%}) for lr in [{_fmt(a['linear_from_lr'])}, "
              f"{_fmt(a['linear_up_to_lr'])}], log-log slope there {_fmt(a['slope_linear_range'])}; "
              f"curvature from lr={_fmt(a['nonlinear_from_lr'])}, rounding noise below "
              f"lr={_fmt(a['precision_floor_below_lr'])}")
    path = out / "eta_sweep.png"
    plots.eta_sweep(lin, path, s.cfg.model, s.cfg.optimizer)
    run.log_image("eta_sweep", path)
    return {"linearity": lin}


def mode_batch_scaling(s: Session, out: Path, run) -> dict:
    from tqdm import tqdm

    c = s.cfg.batch_scaling
    sizes = sorted(set(c.batch_e_values))
    update = None if s.cfg.share_batches else fixed_update(s, out)
    first = {k: {b: [] for b in sizes} for k in KINDS}
    reported = {k: {b: [] for b in sizes} for k in KINDS}
    failed = []
    with tqdm(total=len(sizes) * c.runs, desc=f"{SCRIPT} batch-scaling", unit="run") as bar:
        for b in sizes:
            for r in range(c.runs):
                run_dir = out / "runs" / f"be{b:04d}-r{r:03d}"
                result = one_run(s, run_dir, e_index=b * 100_000 + r, batch_e=b, update=update,
                                 jackknife=False)
                bar.update(1)
                if result is None:
                    failed.append(run_dir.name)
                    continue
                for kind in KINDS:
                    first[kind][b].append(result["delta_h1"][kind]["value"])
                    reported[kind][b].append(result["delta_h1"][kind]["se_cond"])
                run.log({"batch_e": b, "run": r, **{f"delta_h1_{k}": first[k][b][-1] for k in KINDS}})
    usable = [b for b in sizes if len(first[KINDS[0]][b]) >= 2]
    if len(usable) < 3:
        raise RuntimeError(f"batch-scaling needs 3 sizes with 2+ successful runs; got {usable} "
                           f"(failed runs: {failed})")
    result = {"failed_runs": failed, "shared_batches": s.cfg.share_batches, "kinds": {}}
    for kind in KINDS:
        a = analysis.batch_scaling({b: first[kind][b] for b in usable}, c.alpha)
        for row in a["levels"]:
            row["rms_reported_se"] = float(np.sqrt(np.mean(np.square(reported[kind][row["batch_e"]]))))
        result["kinds"][kind] = a
        print(f"{kind:>8}: {a['verdict']} (b = {a['mean_fit']['b']:.3g} +- "
              f"{a['mean_fit']['se_b']:.2g}, p = {a['mean_fit']['p_b']:.3g}; spread slope "
              f"{a['spread_fit']['slope']:.2f} +- {a['spread_fit']['se_slope']:.2f})")
    path = out / "batch_scaling.png"
    plots.batch_scaling(result["kinds"], first, path, s.cfg.model)
    run.log_image("batch_scaling", path)
    return result


def mode_sanity_check(s: Session, out: Path, run) -> dict:
    from tqdm import tqdm

    c, cfg = s.cfg.sanity_check, s.cfg
    fresh, fixed, failed = [], [], []
    total = c.runs * (1 if cfg.share_batches else 2)
    with tqdm(total=total, desc=f"{SCRIPT} sanity-check", unit="run") as bar:
        for r in range(c.runs):   # fresh U and E each run
            run_dir = out / "runs" / f"fresh-r{r:03d}"
            result = one_run(s, run_dir, e_index=r, u_index=r, batch_e=cfg.batch_e)
            bar.update(1)
            if result:
                run.log({"run": run_dir.name, **{f"{name}_{k}": result[name][k]["value"]
                                                 for name in ("delta_h1", "delta_h_true")
                                                 for k in KINDS}})
            if result:
                fresh.append(result)
            else:
                failed.append(run_dir.name)
        if not cfg.share_batches:
            update = fixed_update(s, out)
            for r in range(c.runs):   # U held fixed, fresh E
                run_dir = out / "runs" / f"fixed-u-r{r:03d}"
                result = one_run(s, run_dir, e_index=1_000_000 + r, batch_e=cfg.batch_e,
                                 update=update, jackknife=False)
                bar.update(1)
                if result:
                    fixed.append(result)
                else:
                    failed.append(run_dir.name)
    if len(fresh) < 3:
        raise RuntimeError(f"sanity-check needs 3+ successful runs with fresh U; failed: {failed}")
    summary = {"runs": c.runs, "failed_runs": failed, "alpha": c.alpha,
               "success_definition": "|Delta-H_true - delta-H1| <= 2 SE_cond(delta-H1)", "kinds": {}}
    for kind in KINDS:
        firsts = [r["delta_h1"][kind]["value"] for r in fresh]
        trues = [r["delta_h_true"][kind]["value"] for r in fresh]
        bias = analysis.paired_bias(firsts, trues)
        se_total = [r["delta_h1"][kind]["se_total"] for r in fresh]
        ok = [abs(t - f) <= 2 * r["delta_h1"][kind]["se_cond"] for t, f, r in zip(trues, firsts, fresh)]
        entry = {"bias": bias, "bias_detected": bias["p"] < c.alpha,
                 "total_se_calibration": analysis.calibration(firsts, se_total, c.alpha),
                 "success_rate": float(np.mean(ok)), "successes": int(sum(ok)),
                 "first": firsts, "true": trues}
        if len(fixed) >= 3:
            entry["conditional_se_calibration"] = analysis.calibration(
                [r["delta_h1"][kind]["value"] for r in fixed],
                [r["delta_h1"][kind]["se_cond"] for r in fixed], c.alpha)
        entry["verdict"] = sanity_verdict(entry)
        summary["kinds"][kind] = entry
        print(f"{kind:>8}: {entry['verdict']}")
    path = out / "sanity_check.png"
    plots.sanity_check(summary["kinds"], path, s.cfg.model)
    run.log_image("sanity_check", path)
    return summary


def sanity_verdict(entry: dict) -> str:
    b = entry["bias"]
    parts = [(f"gap Delta-H_true - delta-H1 = {b['mean_difference']:.3g} +- {b['se']:.2g} "
              f"({_fmt(b['relative_bias'], '.1%')} of Delta-H; z = {b['z']:.2f}): ")
             + ("second-order effects detected, lower lr for a pure first-order check"
                if entry["bias_detected"] else "no gap detected")]
    for key, label in (("conditional_se_calibration", "SE given U"),
                       ("total_se_calibration", "total SE")):
        if key in entry:
            cal = entry[key]
            parts.append(f"{label} {'calibrated' if cal['calibrated'] else 'MISCALIBRATED'} "
                         f"(SD of z = {cal['sd_z']:.2f} +- {cal['se_sd_z']:.2f})")
    parts.append(f"success {entry['successes']}/{len(entry['first'])}")
    return "; ".join(parts)


def mode_debug(s: Session, out: Path, run) -> dict:
    """Every mode at the debug sizes, logging each phase and saving gradients."""
    from tqdm import tqdm

    d = s.cfg.debug
    small = dataclasses.replace(
        s.cfg, batch_e=d.batch_e, batch_u=d.batch_u, num_samples=d.num_samples,
        sampling=dataclasses.replace(s.cfg.sampling, max_new_tokens=d.max_new_tokens),
        batch_scaling=dataclasses.replace(s.cfg.batch_scaling, batch_e_values=d.batch_e_values,
                                          runs=d.runs),
        sanity_check=dataclasses.replace(s.cfg.sanity_check, runs=d.runs))
    debug = dataclasses.replace(s, cfg=small, log=tqdm.write)
    summary = {}
    for name, fn in (("single", mode_single), ("eta-sweep", mode_eta_sweep),
                     ("batch-scaling", mode_batch_scaling), ("sanity-check", mode_sanity_check)):
        tqdm.write(f"--- debug: {name}")
        try:   # gradients (4 vectors of the model's size) are kept for the single run only
            summary[name] = fn(dataclasses.replace(debug, save_gradients=d.save_gradients
                                                   and name == "single"), out / name, run)
        except Exception as err:  # noqa: BLE001  (debug goes on to the next mode)
            summary[name] = {"error": f"{type(err).__name__}: {err}"}
            io.write_json(out / name / "error.json", {"error": summary[name]["error"],
                                                      "traceback": traceback.format_exc()})
            tqdm.write(f"{name} failed: {summary[name]['error']}")
    return summary


MODES = {"single": mode_single, "batch-scaling": mode_batch_scaling,
         "sanity-check": mode_sanity_check, "eta-sweep": mode_eta_sweep, "debug": mode_debug}


# ---------------------------------------------------------------------------


def output_dir(cfg: EntropyConfig) -> Path:
    """`<output_dir>/<mode>/<name>_<timestamp>/`, never an existing directory."""
    from rl_onoff.sampling import resolve_path
    from rl_onoff.tracking import run_name

    base = resolve_path(cfg.output_dir) / cfg.mode / (
        f"{run_name(cfg, SCRIPT)}_{datetime.now().strftime('%Y%m%d-%H%M%S')}")
    out, suffix = base, 1
    while out.exists():
        suffix += 1
        out = base.with_name(f"{base.name}-{suffix}")
    out.mkdir(parents=True)
    return out


def run_entropy(config: Config) -> dict:
    """Run 05-entropy in the configured mode; return its summary."""
    import torch

    from rl_onoff import tracking

    cfg: EntropyConfig = config[SECTION]
    torch.manual_seed(cfg.seed)
    session = open_session(cfg)
    out = output_dir(cfg)
    with tracking.start_run(SCRIPT, config, SECTION, output_dir=out) as run:
        tracking.write_provenance(out, config, SECTION, run, session.model_info)
        summary = {"mode": cfg.mode, "model": session.model_info, "optimizer": cfg.optimizer,
                   "lr": cfg.lr, "batch_e": cfg.batch_e, "batch_u": cfg.batch_u,
                   "num_samples": cfg.num_samples, "precision": cfg.precision,
                   **MODES[cfg.mode](session, out, run)}
        io.write_json(out / "summary.json", summary)
        run.finish(summary=summary)
    print(f"wrote {out}")
    return summary


def format_single(result: dict, s: Session) -> str:
    c = s.cfg
    lines = [f"05-entropy single: {c.model}, B_E={result['batch_e']} B_U={result['batch_u']} "
             f"G={result['num_samples']}, {c.optimizer} lr={c.lr:g}, U reward "
             f"{result['u_batch']['reward_mean']:.3f} ({result['u_batch']['groups_with_signal']}/"
             f"{result['batch_u']} prompts with a reward signal)",
             f"{'kind':>8}  {'H (nats)':>16}  {'delta-H1 +- SE_cond (SE_total)':>34}  "
             f"{'Delta-H_true +- SE':>22}  {'ratio':>6}"]
    for kind in KINDS:
        h, f, t = result["entropy"][kind], result["delta_h1"][kind], result["delta_h_true"][kind]
        lines.append(f"{kind:>8}  {h['estimate']:8.4f} +- {h['se']:<6.2g}  "
                     f"{f['value']:+.4e} +- {f['se_cond']:.2e} ({_fmt(f['se_total'], '.2e')})  "
                     f"{t['value']:+.4e} +- {t['se_cond']:.2e}  {_fmt(result['ratio'][kind], '.4f')}")
    lines.append("timings: " + ", ".join(f"{k} {v:.1f}s" for k, v in result["timings"].items()))
    lines.append(f"real step vs lr * direction: max relative difference "
                 f"{result['update']['real_step_mismatch']:.1e}")
    return "\n".join(lines)


def _fmt(value, spec: str = ".3g") -> str:
    return "n/a" if value is None else format(value, spec)
