"""One run of the probe: U batch -> update direction, E batch -> delta-H1 with errors, real step -> truth.

Phases (each timed): the U batch's policy gradient g_U (one backward per
prompt) and the direction u = direction(g_U) (`prepare_update`, reusable by
runs that hold U fixed); the E batch's entropy gradients, whose per-prompt dot
products with u give delta-H1 and its standard error conditional on U; a second
pass over U for the leave-one-prompt-out jackknife of the U-side error; and,
per learning rate, the real optimizer step, then:

    held-out truth       the importance-weighted change on an independent E' batch (fresh
                         responses, anchored before the step): Delta-H', with its own SE,
                         compared by z = (delta-H1 - Delta-H') / sqrt(SE_cond^2 + SE'^2).
                         The verdicts use it.
    linearisation check  the same change on the E responses themselves: it shares their noise
                         with delta-H1, so it measures only the Taylor remainder, never bias.
    exact                (optional) a callable giving the exact entropies (an enumerable policy)

and the restore. A real step that the weights' dtype cannot represent stops the run.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from rl_onoff.entropy import estimators as est
from rl_onoff.entropy.analysis import jackknife_se, mean_se, p_two_sided
from rl_onoff.entropy.objective import Objective
from rl_onoff.entropy.policy import Group, trainable
from rl_onoff.entropy.update import Updater, parameters_vector, restore


@dataclass(frozen=True)
class ProbeSettings:
    lr: float                          # eta of the step
    temperature: float = 1.0           # the policy is softmax(logits / T)
    objective: Objective = field(default_factory=Objective)  # advantages, aggregation, bonus
    sweep_lrs: tuple[float, ...] = ()  # further etas at which to take the real step
    min_ess_share: float = 0.5         # flag E' importance weights whose ESS / n falls below
    max_step_mismatch: float = 0.1     # stop when the real step differs more from lr * u


class RealStepError(ValueError):
    """The real optimizer step is not the predicted one (the dtype cannot represent it)."""


class PhaseTimer:
    """Seconds per phase; optionally a line per phase (`debug`) and a progress bar to advance."""

    def __init__(self, log: Callable[[str], None] | None = None, bar=None):
        self.seconds: dict[str, float] = {}
        self.log, self.bar = log, bar

    @contextmanager
    def __call__(self, name: str):
        start = time.perf_counter()
        if self.bar is not None:
            self.bar.set_postfix_str(name)
        yield
        took = time.perf_counter() - start
        self.seconds[name] = self.seconds.get(name, 0.0) + took
        if self.log:
            self.log(f"  phase {name}: {took:.2f}s")
        if self.bar is not None:
            self.bar.update(1)


@dataclass
class UpdateBatch:
    """The U batch and what a step on it is: g_U and the direction u per unit learning rate;
    per prompt Cov_i(log pi(y_i), A_i), Cui et al.'s natural-policy-gradient term."""
    groups: list[Group]
    g_u: torch.Tensor
    direction: torch.Tensor
    covariances: list[float]


def policy_gradient_pass(model, groups, settings: ProbeSettings, covariances=None):
    """Each U group's gradient of the objective, one at a time."""
    return settings.objective.gradients(model, groups, trainable(model), settings.temperature,
                                        covariances)


def require_signal(u_groups: list[Group], objective: Objective) -> None:
    """Refuse a U batch whose rewards never differ within a prompt (no bonus: no step)."""
    if not objective.entropy_coef and not any(len(set(g.rewards)) > 1 for g in u_groups):
        raise ValueError(f"no reward signal in the U batch: in each of its {len(u_groups)} prompts "
                         "all responses got the same reward, so the policy gradient is 0. Use more "
                         "prompts or samples (batch_u, num_samples), or a model that is right "
                         "sometimes and wrong sometimes")


def prepare_update(model, u_groups: list[Group], updater: Updater, settings: ProbeSettings,
                   timer: PhaseTimer) -> UpdateBatch:
    """g_U and the direction; refuses a U batch whose rewards never differ within a prompt."""
    require_signal(u_groups, settings.objective)
    covariances = []
    with timer("u_gradient"):
        g_u = sum(policy_gradient_pass(model, u_groups, settings, covariances)) / len(u_groups)
    with timer("direction"):
        u = updater.direction(g_u, parameters_vector(trainable(model)))
    if timer.log:
        timer.log(f"  |g_U| = {float(g_u.norm()):.4g}, |u| = {float(u.norm()):.4g}")
    return UpdateBatch(u_groups, g_u, u, covariances)


def entropy_dots(model, e_groups: list[Group], params, temperature: float,
                 direction: torch.Tensor) -> tuple[list, dict, dict]:
    """E's anchors, its batch-mean entropy gradient per kind, and per kind the per-prompt dot
    products of the entropy gradient with `direction` (their mean is grad H . direction).

    `direction` is one vector (dots: one per prompt) or several stacked as rows, shape
    (D, P) (dots: shape (prompts, D)), all dotted with the same gradient: one backward."""
    anchors, g_parts, dot_parts = [], {k: 0.0 for k in est.PARTS}, {k: [] for k in est.PARTS}
    for anchor, grads in est.entropy_gradients(model, e_groups, params, temperature):
        anchors.append(anchor)
        for part in est.PARTS:
            g_parts[part] = g_parts[part] + grads[part] / len(e_groups)
            dot_parts[part].append((direction @ grads[part]).tolist())
    constants = est.ratio_constants(anchors)
    return (anchors, est.combine(g_parts, *constants),
            est.combine({k: np.asarray(v) for k, v in dot_parts.items()}, *constants))


def probe(model, update: UpdateBatch, e_groups: list[Group], updater: Updater,
          settings: ProbeSettings, timer: PhaseTimer | None = None, jackknife: bool = True,
          keep_gradients: bool = False, heldout_groups: list[Group] | None = None,
          exact: Callable[[], dict[str, float]] | None = None) -> dict:
    """delta-H1 (with standard errors), the held-out truth on `heldout_groups` (E'), the
    linearisation check on E, and the exact change when `exact` is given, for every kind.

    `jackknife: false` skips the U-side error (runs that hold U fixed do not need it).
    """
    timer = timer or PhaseTimer()
    params = trainable(model)
    theta0 = parameters_vector(params)
    g_u, u = update.g_u, update.direction

    with timer("e_gradient"):
        anchors, g_h, dots = entropy_dots(model, e_groups, params, settings.temperature, u)
    heldout_anchors = None
    if heldout_groups:
        with timer("heldout_anchor"):
            heldout_anchors = est.anchors_at(model, heldout_groups, settings.temperature)
    exact_before = exact() if exact else None

    loo = {k: [] for k in est.KINDS}
    if jackknife:
        with timer("u_jackknife"):
            n = len(update.groups)
            for g_q in policy_gradient_pass(model, update.groups, settings):
                u_q = updater.direction((n * g_u - g_q) / (n - 1), theta0)
                for kind in est.KINDS:
                    loo[kind].append(float(g_h[kind] @ u_q))

    steps = []
    for lr in (settings.lr, *settings.sweep_lrs):
        with timer("true_step"):
            updater.step(g_u, lr)
            mismatch = check_real_step(parameters_vector(params) - theta0, lr * u, theta0,
                                       settings, params)
            step = {"lr": lr, "mismatch": mismatch,
                    "linearisation": est.entropy_changes(model, e_groups, anchors,
                                                         settings.temperature)}
            if heldout_anchors:
                step["held_out"] = est.entropy_changes(model, heldout_groups, heldout_anchors,
                                                       settings.temperature)
            if exact:
                after = exact()
                step["exact"] = {k: after[k] - exact_before[k] for k in est.KINDS}
            restore(params, theta0)
        steps.append(step)
        if timer.log:
            timer.log(f"  eta={lr:.3g}: real step vs eta*u, max relative difference {mismatch:.2e}")

    result = _summarise(settings, update, e_groups, anchors, heldout_anchors, dots, loo, steps)
    if exact:
        result["exact"] = {"entropy": exact_before, "change": steps[0]["exact"]}
    result["timings"] = dict(timer.seconds)
    if keep_gradients:
        result["_arrays"] = {"g_u": g_u, "direction": u,
                             **{f"grad_h_{k}": g_h[k] for k in est.KINDS}}
    return result


def check_real_step(moved: torch.Tensor, predicted: torch.Tensor, theta0: torch.Tensor,
                    settings: ProbeSettings, params) -> float:
    """Max relative difference of the real step from the predicted one; above the limit the
    weights go back to theta0 and RealStepError says what to set."""
    mismatch = float((moved - predicted).abs().max() / predicted.abs().max().clamp_min(1e-300))
    if mismatch > settings.max_step_mismatch:
        restore(params, theta0)
        raise RealStepError(step_mismatch_message(mismatch, settings, params))
    return mismatch


def step_mismatch_message(mismatch: float, settings: ProbeSettings, params) -> str:
    dtypes = sorted({str(p.dtype).replace("torch.", "") for p in params})
    return (f"the real optimizer step differs from lr x direction by {mismatch:.0%} (more than "
            f"{settings.max_step_mismatch:.0%}): {'/'.join(dtypes)} weights cannot represent a step "
            f"of lr {settings.lr:g}, so no truth can be measured. Set 05_entropy.precision: "
            "float64 (or defaults.dtype: float32), or raise 05_entropy.lr")


def change_summary(changes: dict[str, list[float]], anchors) -> dict[str, dict]:
    """Per kind: the batch's change, its SE over prompts, and the per-prompt values. The
    length-weighted kind's value is the ratio's finite change; its SE, per-prompt values from
    the first-order map `combine`."""
    per_prompt = est.combine({k: np.asarray(v) for k, v in changes.items()},
                             *est.ratio_constants(anchors))
    out = {}
    for kind in est.KINDS:
        value, se = mean_se(per_prompt[kind])
        if kind == "token_weighted":
            value = est.ratio_change(changes, anchors)
        out[kind] = {"value": value, "se": se, "per_prompt": per_prompt[kind].tolist()}
    return out


def held_out_comparison(first: dict, held: dict, ess: list[float], min_share: float) -> dict:
    """z = (delta-H1 - Delta-H') / sqrt(SE_cond^2 + SE'^2) per kind (E and E' are independent
    given U), and the ESS of E''s importance weights."""
    out = {}
    for kind in est.KINDS:
        se = float(np.hypot(first[kind]["se_cond"], held[kind]["se"]))
        z = (first[kind]["value"] - held[kind]["value"]) / se if se > 0 else float("nan")
        out[kind] = {"value": held[kind]["value"], "se": held[kind]["se"], "z": z,
                     "p": p_two_sided(z) if np.isfinite(z) else float("nan")}
    out["ess"] = {"min_share": float(min(ess)), "mean_share": float(np.mean(ess)),
                  "threshold": min_share, "low": bool(min(ess) < min_share)}
    return out


def _summarise(settings, update, e_groups, anchors, heldout_anchors, dots, loo, steps) -> dict:
    lr, u_groups = settings.lr, update.groups
    constants = est.ratio_constants(anchors)
    entropy = {}
    per_prompt_h = est.combine({k: np.array([a.entropy()[k] for a in anchors]) for k in est.PARTS},
                               *constants)
    for kind in est.KINDS:
        value, se = mean_se(per_prompt_h[kind])
        entropy[kind] = {"estimate": constants[0] if kind == "token_weighted" else value, "se": se}
    first = {}
    for kind in est.KINDS:
        value, se_cond = mean_se(lr * dots[kind])
        se_u = lr * jackknife_se(loo[kind]) if loo[kind] else None
        first[kind] = {"value": value, "se_cond": se_cond, "se_u": se_u,
                       "se_total": None if se_u is None else float(np.hypot(se_cond, se_u))}
    step = steps[0]
    lin = change_summary(step["linearisation"][0], anchors)
    check = {}
    for kind in est.KINDS:
        diff_value, diff_se = mean_se(np.asarray(lin[kind]["per_prompt"]) - lr * dots[kind])
        check[kind] = {"value": lin[kind]["value"], "se_cond": lin[kind]["se"],
                       "difference": {"value": diff_value, "se_cond": diff_se},
                       "ratio": lin[kind]["value"] / first[kind]["value"]
                       if first[kind]["value"] != 0 else None}
    held = None
    cui_npg = mean_se(-lr * np.asarray(update.covariances))
    theory = {"cui_natural_pg": {"value": cui_npg[0], "se": cui_npg[1]}}
    if "held_out" in step:
        held_changes = change_summary(step["held_out"][0], heldout_anchors)
        held = held_out_comparison(first, held_changes, step["held_out"][1], settings.min_ess_share)
        value, se = mean_se(-np.asarray(step["held_out"][2]))
        theory["cui_real_step"] = {"value": value, "se": se}
    sweep = []
    for s in steps[1:]:
        point = {"lr": s["lr"], "real_step_mismatch": s["mismatch"],
                 "delta_h1": {k: float(s["lr"] * np.mean(dots[k])) for k in est.KINDS},
                 "linearisation_check": {k: {"value": v["value"], "se_cond": v["se"]} for k, v in
                                         change_summary(s["linearisation"][0], anchors).items()}}
        if "held_out" in s:
            point["held_out"] = {k: {"value": v["value"], "se": v["se"]} for k, v in
                                 change_summary(s["held_out"][0], heldout_anchors).items()}
            point["held_out_ess_min_share"] = float(min(s["held_out"][1]))
        sweep.append(point)
    rewards = np.array([r for g in u_groups for r in g.rewards], dtype=float)
    with_signal = sum(len(set(g.rewards)) > 1 for g in u_groups)
    per_prompt = {k: {"delta_h1": (lr * dots[k]).tolist(),
                      "linearisation_check": lin[k]["per_prompt"]} for k in est.KINDS}
    if held:
        for k in est.KINDS:
            per_prompt[k]["held_out"] = held_changes[k]["per_prompt"]
    return {
        "lr": lr, "batch_u": len(u_groups), "batch_e": len(e_groups),
        "batch_heldout": len(heldout_anchors) if heldout_anchors else 0,
        "num_samples": len(e_groups[0].responses),
        "u_batch": {"questions": [g.question for g in u_groups],
                    "reward_mean": float(rewards.mean()), "groups_with_signal": with_signal,
                    "mean_length": _mean_length(u_groups)},
        "e_batch": {"questions": [g.question for g in e_groups], "mean_length": _mean_length(e_groups)},
        "entropy": entropy,
        "update": {"grad_norm": float(update.g_u.norm()),
                   "direction_norm": float(update.direction.norm()),
                   "step_norm": float(lr * update.direction.norm()),
                   "real_step_mismatch": step["mismatch"]},
        "delta_h1": first, "held_out": held, "linearisation_check": check,
        "theory": theory,
        "sweep": sweep, "per_prompt": per_prompt,
    }


def _mean_length(groups: list[Group]) -> float:
    return float(np.mean([len(r) for g in groups for r in g.responses]))
