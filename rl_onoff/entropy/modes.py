"""05-entropy's modes: which runs to make, where they land, what is concluded from them.

Every mode owns `<output_dir>/<mode>/` through the stage frame (lock, fingerprint,
on_config_change): the resolved config (run_config.json), one
`runs/<id>/results.json` per run (or its `error.json`: a failed run is recorded
and the others go on; a real step the dtype cannot represent stops the mode),
`summary.json` with the analysis and verdicts, and PNG plots.
"""

from __future__ import annotations

import dataclasses
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from rl_onoff import io
from rl_onoff.config import Config, ConfigError
from rl_onoff.entropy import analysis, plots
from rl_onoff.entropy.batches import PromptSet, SamplingSpec, batch_seed, sample_batch
from rl_onoff.entropy.config import EntropyConfig
from rl_onoff.entropy.estimators import KINDS
from rl_onoff.entropy.probe import (PhaseTimer, ProbeSettings, RealStepError, UpdateBatch,
                                    prepare_update, probe)
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
                             objective=self.cfg.objective(),
                             min_ess_share=self.cfg.min_ess_share)

    def sample(self, role: str, index: int, size: int, score: bool, timer: PhaseTimer):
        with timer(f"sample_{role.lower()}"):
            return sample_batch(self.model, self.tokenizer, self.prompts, size, self.sampling,
                                batch_seed(self.cfg.seed, role, index), self.eos_ids, score)

    def update(self, index: int, size: int, timer: PhaseTimer) -> UpdateBatch:
        groups = self.sample("U", index, size, True, timer)
        return prepare_update(self.model, groups, self.updater, self.settings, timer)


def open_session(stage) -> Session:
    """Load the policy (and LoRA adapter), the dataset's prompts and the optimizer."""
    from rl_onoff.entropy.policy import trainable
    from rl_onoff.generation import eos_token_ids
    from rl_onoff.stage import context_length

    cfg: EntropyConfig = stage.cfg
    records = stage.load_dataset()
    model, tokenizer = stage.load_model()
    if cfg.adapter:
        from peft import PeftModel
        model = PeftModel.from_pretrained(model, str(stage.config.resolve(cfg.adapter)),
                                          is_trainable=True)
    if cfg.precision == "float64":
        model = model.double()
    records, _, prompt_ids = stage.prompts(records, tokenizer, context_length(model))
    largest = {"batch-scaling": max(cfg.batch_u, *cfg.batch_scaling.batch_e_values),
               "debug": max(cfg.debug.batch_u, cfg.debug.batch_e, *cfg.debug.batch_e_values)
               }.get(cfg.mode, max(cfg.batch_e, cfg.batch_u, cfg.batch_heldout))
    if len(records) < largest:
        raise ConfigError(f"{SECTION}.dataset: {len(records)} usable records, but a batch asks "
                          f"for {largest} prompts; raise `num_examples` or lower the batch sizes")
    task = cfg.task
    prompts = PromptSet(prompt_ids, [r["answer"] for r in records],
                        [r["question"] for r in records], cfg.reward, task.format,
                        task.ignore_think, task.reward_timeout, cfg.sampling.max_new_tokens)
    state = str(stage.config.resolve(cfg.optimizer_state)) if cfg.optimizer_state else None
    spec = OptimizerSpec(cfg.optimizer, tuple(cfg.betas), cfg.eps, cfg.weight_decay, state)
    try:
        updater = Updater(trainable(model), spec)
    except ValueError as err:
        raise ConfigError(f"{SECTION}.optimizer_state: {err}") from err
    info = dict(stage.model_info)
    info["adapter"] = cfg.adapter
    info["trainable_parameters"] = sum(p.numel() for p in trainable(model))
    return Session(cfg, model, tokenizer, prompts, updater, eos_token_ids(model, tokenizer), info)


# ---------------------------------------------------------------------------
# One run, failure-isolated


def attempt(run_dir: Path, work: Callable[[], dict]) -> dict | None:
    """Do one run; write its results.json, or its error.json and return None."""
    from tqdm import tqdm

    from rl_onoff.stage import StageError

    try:
        result = work()
    except RealStepError as err:   # the dtype: every run would fail the same way
        raise StageError(str(err)) from err
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
            update: UpdateBatch | None = None, jackknife: bool = True, heldout: bool = True,
            settings: ProbeSettings | None = None, bar=None) -> dict | None:
    """Sample what the run needs (E, E' when `heldout`, and U unless given), then probe; None
    if it failed."""
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
        heldout_groups = (s.sample("H", e_index, s.cfg.batch_heldout, False, timer)
                          if heldout else None)
        result = probe(s.model, upd, e_groups, s.updater, settings, timer, jackknife=jackknife,
                       keep_gradients=s.save_gradients, heldout_groups=heldout_groups)
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

    if s.cfg.ppo_steps > 1:
        return mode_single_path(s, out, run)
    bar = tqdm(total=8, desc=f"{SCRIPT} single", unit="phase")
    result = one_run(s, out / "runs" / "run-000", e_index=0, batch_e=s.cfg.batch_e, bar=bar)
    bar.close()
    if result is None:
        raise RuntimeError(failure(out / "runs" / "run-000"))
    print(format_single(result, s))
    run.log({f"{name}_{k}": result[name][k]["value"]
             for name in ("delta_h1", "held_out", "linearisation_check") for k in KINDS})
    path = out / "single.png"
    plots.single(result, path, s.cfg.model)
    run.log_image("single", path)
    alpha = s.cfg.sanity_check.alpha
    return {"result": {k: result[k] for k in ("entropy", "delta_h1", "held_out",
                                              "linearisation_check", "theory", "update", "timings")},
            "agrees_with_held_out": {k: result["held_out"][k]["p"] >= alpha for k in KINDS},
            "alpha": alpha, "low_ess": result["held_out"]["ess"]["low"]}


def mode_single_path(s: Session, out: Path, run) -> dict:
    """`single` with k = ppo_minibatches x ppo_epochs > 1: the same question (what one update
    does to the entropy) for a PPO update of k steps, predicted along its path."""
    from tqdm import tqdm

    from rl_onoff.entropy.path import PathSettings, ppo_path

    cfg, path = s.cfg, PathSettings(s.cfg.ppo_minibatches, s.cfg.ppo_epochs)
    run_dir = out / "runs" / "run-000"
    bar = tqdm(total=8 + 4 * path.steps, desc=f"{SCRIPT} single, {path.steps} PPO steps",
               unit="phase")

    def work() -> dict:
        timer = PhaseTimer(s.log, bar)
        u_groups = s.sample("U", 0, cfg.batch_u, True, timer)
        heldout = s.sample("H", 0, cfg.batch_heldout, False, timer)
        result = ppo_path(s.model, u_groups,
                          lambda j: s.sample("E", j, cfg.batch_e, False, timer), s.updater,
                          s.settings, path, heldout_groups=heldout, timer=timer)
        result.update({"batch_e": cfg.batch_e, "num_samples": cfg.num_samples})
        return result

    result = attempt(run_dir, work)
    bar.close()
    if result is None:
        raise RuntimeError(failure(run_dir))
    print(format_path(result, s))
    run.log({f"{name}_{k}": result[name][k]["value"]
             for name in ("path_prediction", "trapezoid_prediction", "held_out", "endpoint_control")
             for k in KINDS})
    figure = out / "single_path.png"
    plots.path(result, figure, cfg.model)
    run.log_image("single_path", figure)
    alpha = cfg.sanity_check.alpha
    return {"result": {k: result[k] for k in ("steps", "path_prediction", "trapezoid_prediction",
                                              "trapezoid_end_term", "endpoint_control",
                                              "held_out", "trapezoid_held_out", "endpoint_held_out",
                                              "real_step_mismatch", "timings")},
            "agrees_with_held_out": {k: result["held_out"][k]["p"] >= alpha for k in KINDS},
            "alpha": alpha, "low_ess": result["held_out"]["ess"]["low"]}


def mode_eta_sweep(s: Session, out: Path, run) -> dict:
    """The Taylor remainder against eta: the linearisation check (same E responses, so no
    sampling noise between the two) at each lr; the held-out truth beside it."""
    from tqdm import tqdm

    lrs = sorted(s.cfg.eta_sweep.lrs)
    settings = dataclasses.replace(s.settings, lr=lrs[0], sweep_lrs=tuple(lrs[1:]))
    bar = tqdm(total=6 + len(lrs), desc=f"{SCRIPT} eta-sweep", unit="phase")
    result = one_run(s, out / "runs" / "run-000", e_index=0, batch_e=s.cfg.batch_e,
                     jackknife=False, settings=settings, bar=bar)
    bar.close()
    if result is None:
        raise RuntimeError(failure(out / "runs" / "run-000"))
    points = [{"lr": lrs[0], "delta_h1": {k: v["value"] for k, v in result["delta_h1"].items()},
               "linearisation_check": result["linearisation_check"],
               "held_out": result["held_out"],
               "held_out_ess_min_share": result["held_out"]["ess"]["min_share"]}, *result["sweep"]]
    lin = {kind: analysis.linearity([p["lr"] for p in points],
                                    [p["linearisation_check"][kind]["value"] for p in points],
                                    [p["delta_h1"][kind] for p in points], s.cfg.eta_sweep.tolerance)
           for kind in KINDS}
    for kind in KINDS:
        a = lin[kind]
        a["held_out"] = [p["held_out"][kind]["value"] for p in points]
        a["held_out_se"] = [p["held_out"][kind]["se"] for p in points]
        print(f"{kind:>14}: linear (within {a['tolerance']:.0%}) for lr in "
              f"[{_fmt(a['linear_from_lr'])}, {_fmt(a['linear_up_to_lr'])}], log-log slope there "
              f"{_fmt(a['slope_linear_range'])}; curvature from lr={_fmt(a['nonlinear_from_lr'])}, "
              f"rounding noise below lr={_fmt(a['precision_floor_below_lr'])}")
    ess = [p["held_out_ess_min_share"] for p in points]
    low = [p["lr"] for p, e in zip(points, ess) if e < s.cfg.min_ess_share]
    if low:
        print(f"importance weights degenerate (ESS share < {s.cfg.min_ess_share}) from lr "
              f"{min(low):g}: the held-out truth is unreliable there")
    path = out / "eta_sweep.png"
    plots.eta_sweep(lin, path, s.cfg.model, s.cfg.optimizer)
    run.log_image("eta_sweep", path)
    return {"linearity": lin, "held_out_ess_min_share": ess, "low_ess_lrs": low}


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
                                 jackknife=False, heldout=False)
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
        print(f"{kind:>14}: {a['verdict']} (b = {a['mean_fit']['b']:.3g} +- "
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
        for r in range(c.runs):   # fresh U, E and E' each run
            run_dir = out / "runs" / f"fresh-r{r:03d}"
            result = one_run(s, run_dir, e_index=r, u_index=r, batch_e=cfg.batch_e)
            bar.update(1)
            if result:
                fresh.append(result)
                run.log({"run": run_dir.name, **{f"{name}_{k}": result[name][k]["value"]
                                                 for name in ("delta_h1", "held_out")
                                                 for k in KINDS}})
            else:
                failed.append(run_dir.name)
        if not cfg.share_batches:
            update = fixed_update(s, out)
            for r in range(c.runs):   # U held fixed, fresh E
                run_dir = out / "runs" / f"fixed-u-r{r:03d}"
                result = one_run(s, run_dir, e_index=1_000_000 + r, batch_e=cfg.batch_e,
                                 update=update, jackknife=False, heldout=False)
                bar.update(1)
                if result:
                    fixed.append(result)
                else:
                    failed.append(run_dir.name)
    if len(fresh) < 3:
        raise RuntimeError(f"sanity-check needs 3+ successful runs with fresh U; failed: {failed}")
    summary = {"runs": c.runs, "failed_runs": failed, "alpha": c.alpha,
               "truth": "held-out: the real step's change on an independent E' batch",
               "low_ess_runs": sum(r["held_out"]["ess"]["low"] for r in fresh), "kinds": {}}
    for kind in KINDS:
        firsts = [r["delta_h1"][kind]["value"] for r in fresh]
        held = [r["held_out"][kind]["value"] for r in fresh]
        z = [r["held_out"][kind]["z"] for r in fresh]
        lin = [r["linearisation_check"][kind]["value"] for r in fresh]
        se_total = [r["delta_h1"][kind]["se_total"] for r in fresh]
        entry = {"held_out_bias": analysis.paired_bias(firsts, held),
                 "held_out_z": analysis.z_summary(z, c.alpha),
                 "linearisation_check": analysis.paired_bias(firsts, lin),
                 "total_se_calibration": analysis.calibration(firsts, se_total, c.alpha),
                 "first": firsts, "held_out": held, "linearisation": lin}
        entry["bias_detected"] = entry["held_out_bias"]["p"] < c.alpha
        if len(fixed) >= 3:
            entry["conditional_se_calibration"] = analysis.calibration(
                [r["delta_h1"][kind]["value"] for r in fixed],
                [r["delta_h1"][kind]["se_cond"] for r in fixed], c.alpha)
        entry["verdict"] = sanity_verdict(entry)
        summary["kinds"][kind] = entry
        print(f"{kind:>14}: {entry['verdict']}")
    path = out / "sanity_check.png"
    plots.sanity_check(summary["kinds"], path, s.cfg.model)
    run.log_image("sanity_check", path)
    return summary


def sanity_verdict(entry: dict) -> str:
    b, z, lin = entry["held_out_bias"], entry["held_out_z"], entry["linearisation_check"]
    parts = [(f"held-out gap Delta-H' - delta-H1 = {b['mean_difference']:.3g} +- {b['se']:.2g} "
              f"(z = {b['z']:.2f}): ") + ("BIAS or second-order effects detected"
                                         if entry["bias_detected"] else "no gap detected"),
             (f"per-run z SD {z['sd']:.2f} +- {z['se_sd']:.2f} "
              f"({'calibrated' if z['calibrated'] else 'MISCALIBRATED'})"),
             f"linearisation check (same E, not a truth) gap {lin['mean_difference']:.2g}"]
    for key, label in (("conditional_se_calibration", "SE given U"),
                       ("total_se_calibration", "total SE")):
        if key in entry:
            cal = entry[key]
            parts.append(f"{label} {'calibrated' if cal['calibrated'] else 'MISCALIBRATED'} "
                         f"(SD of z = {cal['sd_z']:.2f} +- {cal['se_sd_z']:.2f})")
    return "; ".join(parts)


def mode_debug(s: Session, out: Path, run) -> dict:
    """Every mode at the debug sizes, logging each phase and saving gradients."""
    from tqdm import tqdm

    d = s.cfg.debug
    small = dataclasses.replace(
        s.cfg, batch_e=d.batch_e, batch_u=d.batch_u, batch_heldout=d.batch_e,
        num_samples=d.num_samples,
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


def mode_exact(cfg: EntropyConfig, out: Path, run) -> dict:
    from rl_onoff.entropy.exact import run_exact

    summary = run_exact(cfg)
    io.write_json(out / "runs.json", summary.pop("runs"))
    for kind, entry in summary["kinds"].items():
        print(f"{kind:>14}: {entry['verdict']}")
    path = out / "exact.png"
    if cfg.ppo_steps > 1:
        print("clip fraction per step (tokens outside the band, mean over runs): "
              + ", ".join(f"{x:.3f}" for x in summary["clip_outside_band_mean_per_step"]))
        plots.exact_path(summary, io.read_json(out / "runs.json"), path)
    else:
        plots.exact(summary, io.read_json(out / "runs.json"), path)
    run.log_image("exact", path)
    return summary


MODES = {"single": mode_single, "batch-scaling": mode_batch_scaling,
         "sanity-check": mode_sanity_check, "eta-sweep": mode_eta_sweep, "exact": mode_exact,
         "debug": mode_debug}


# ---------------------------------------------------------------------------


def run_entropy(config: Config) -> dict:
    """Run 05-entropy in the configured mode, in `<output_dir>/<mode>/`; return its summary."""
    import torch

    from rl_onoff.stage import Stage

    cfg: EntropyConfig = config[SECTION]
    torch.manual_seed(cfg.seed)
    stage = Stage(SCRIPT, SECTION, config)
    stage.out = stage.out / cfg.mode      # each mode owns its folder
    with stage:
        summary = {"mode": cfg.mode, "optimizer": cfg.optimizer}
        if cfg.mode == "exact":        # no language model: an enumerable policy
            out = stage.claim()
            summary.update(mode_exact(cfg, out, stage.run))
        else:
            session = open_session(stage)
            out = stage.claim()
            summary.update({"model": session.model_info, "lr": cfg.lr, "batch_e": cfg.batch_e,
                            "batch_u": cfg.batch_u, "batch_heldout": cfg.batch_heldout,
                            "num_samples": cfg.num_samples, "precision": cfg.precision,
                            "reward": cfg.reward, **MODES[cfg.mode](session, out, stage.run)})
        io.write_json(out / "summary.json", summary)
        stage.finish(summary)
    print(f"wrote {out}")
    return summary


def format_single(result: dict, s: Session) -> str:
    c = s.cfg
    lines = [(f"05-entropy single: {c.model}, B_E={result['batch_e']} "
              f"B_E'={result['batch_heldout']} B_U={result['batch_u']} G={result['num_samples']}, "
              f"{c.optimizer} lr={c.lr:g}, U reward {result['u_batch']['reward_mean']:.3f} "
              f"({result['u_batch']['groups_with_signal']}/{result['batch_u']} prompts with a "
              "signal)"),
             (f"{'kind':>14}  {'H (nats)':>16}  {'delta-H1 +- SE_cond (SE_total)':>34}  "
              f"{'held-out Delta-H-prime +- SE':>28}  {'z':>6}  {'linearisation ratio':>8}")]
    for kind in KINDS:
        h, f, t = result["entropy"][kind], result["delta_h1"][kind], result["held_out"][kind]
        lines.append(f"{kind:>14}  {h['estimate']:8.4f} +- {h['se']:<6.2g}  "
                     f"{f['value']:+.4e} +- {f['se_cond']:.2e} ({_fmt(f['se_total'], '.2e')})  "
                     f"{t['value']:+.4e} +- {t['se']:.2e}  {t['z']:+6.2f}  "
                     f"{_fmt(result['linearisation_check'][kind]['ratio'], '.4f')}")
    th = result["theory"]
    lines.append(f"theory (sequence entropy, Cui et al. 2025): natural PG with step lr, -lr Cov(log pi,"
                 f" A) on U = {th['cui_natural_pg']['value']:+.4e} +- {th['cui_natural_pg']['se']:.2e}; "
                 f"the real step's -Cov(log pi, Delta log pi) on E' = "
                 f"{th['cui_real_step']['value']:+.4e} +- {th['cui_real_step']['se']:.2e}")
    ess = result["held_out"]["ess"]
    lines.append(f"E' importance weights: ESS share min {ess['min_share']:.3f}, mean "
                 f"{ess['mean_share']:.3f}" + (f"  LOW (< {ess['threshold']}): the held-out truth "
                                                "is unreliable; lower lr" if ess["low"] else ""))
    lines.append("timings: " + ", ".join(f"{k} {v:.1f}s" for k, v in result["timings"].items()))
    lines.append(f"real step vs lr * direction: max relative difference "
                 f"{result['update']['real_step_mismatch']:.1e}")
    return "\n".join(lines)


def format_path(result: dict, s: Session) -> str:
    c, obj = s.cfg, s.cfg.objective()
    low, high = obj.band
    lines = [(f"05-entropy single, PPO path: {c.model}, k={result['steps_k']} steps "
              f"({result['minibatches']} minibatches x {result['epochs']} epochs of "
              f"B_U={result['batch_u']}), B_E={result['batch_e']} per step, "
              f"B_E'={result['batch_heldout']}, G={result['num_samples']}, {c.optimizer} "
              f"lr={c.lr:g}, clip band [{low:g}, {high:g}], KL {c.kl_estimator} beta={c.kl_coef:g}, "
              f"U reward {result['u_batch']['reward_mean']:.3f}"),
             (f"{'step':>4} {'epoch':>5} {'mb':>3} {'|Dtheta|':>9} {'outside band':>12} "
              f"{'clipped':>8}  " + "  ".join(f"{'term ' + k + ' +- SE':>26}" for k in KINDS))]
    for st in result["steps"]:
        lines.append(f"{st['step']:>4} {st['epoch']:>5} {st['minibatch']:>3} "
                     f"{st['displacement_norm']:9.3g} {st['clip']['outside_band']:12.3f} "
                     f"{st['clip']['clipped']:8.3f}  " + "  ".join(
                         f"{st['terms'][k]['value']:+.3e} +- {st['terms'][k]['se']:.2e}"
                         f"{'':>2}" for k in KINDS))
    lines.append(f"{'kind':>14}  {'prediction':<22} {'value +- SE':>22}  "
                 f"{'held-out truth +- SE':>22}  {'z':>6}")
    rows = (("path (1st order)", "path_prediction", "held_out"),
            ("trapezoid (2nd order)", "trapezoid_prediction", "trapezoid_held_out"),
            ("endpoint control", "endpoint_control", "endpoint_held_out"))
    for kind in KINDS:
        h = result["held_out"][kind]
        for label, name, compared in rows:
            p, z = result[name][kind], result[compared][kind]["z"]
            lines.append(f"{kind:>14}  {label:<22} {p['value']:+.4e} +- {p['se_cond']:.2e}  "
                         f"{h['value']:+.4e} +- {h['se']:.2e}  {z:+6.2f}")
    ess = result["held_out"]["ess"]
    lines.append(f"E' importance weights after {result['steps_k']} steps: ESS share min "
                 f"{ess['min_share']:.3f}, mean {ess['mean_share']:.3f}"
                 + (f"  LOW (< {ess['threshold']}): the held-out truth is unreliable; lower lr"
                    if ess["low"] else ""))
    lines.append("trapezoid: sum_{j=0..k} grad H_j . (Dtheta_{j-1} + Dtheta_j)/2, one more batch "
                 "E_k at theta_k; SEs are conditional on U (sum over batches of E_j's SEs); "
                 "timings: "
                 + ", ".join(f"{k} {v:.1f}s" for k, v in result["timings"].items()))
    lines.append(f"first real step vs lr * direction: max relative difference "
                 f"{result['real_step_mismatch']:.1e}")
    return "\n".join(lines)


def _fmt(value, spec: str = ".3g") -> str:
    return "n/a" if value is None else format(value, spec)
