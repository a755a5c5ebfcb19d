"""A PPO update of k real steps, predicted as the sum of first-order terms along its path,
and by the trapezoid rule (second order).

The U batch is sampled once at theta_0 and its per-token log-probs stored (pi_old of
the clipped ratio and the KL reference). It is split into `minibatches` minibatches
of prompts (contiguous, the same order every epoch: no reshuffle), and `epochs`
passes over them give k = minibatches x epochs steps. For step j = 0..k-1, at theta_j:

    E_j      a fresh batch sampled at theta_j (independent across steps): the entropy
             gradient grad H_j is estimated on-policy, as in the one-step probe
    step j   the real optimizer step on minibatch j's clipped objective (one persistent
             torch optimizer across the k steps, so Adam's moments carry);
             Dtheta_j = theta_{j+1} - theta_j is measured, not predicted
    term_j   grad H_j . Dtheta_j, with its SE over E_j's prompts

    prediction = sum_j term_j,   SE = sqrt(sum_j SE_j^2)   (E_j independent given U)

The first-order sum misses each step's second-order Taylor remainder, and these add
up over k steps. The trapezoid rule, sum_j 1/2 (grad H_j + grad H_{j+1}) . Dtheta_j,
is exact for a quadratic H along each step. Regrouped by gradient,

    trapezoid = sum_{j=0..k} grad H_j . w_j,   w_j = 1/2 (Dtheta_{j-1} + Dtheta_j)
                (Dtheta_{-1} = Dtheta_k = 0)

so each E_j carries a second dot product (same backward), and one more batch E_k is
sampled at theta_k after the last step; its SE is sqrt(sum_{j=0..k} SE_j^2).

Truths after the k steps: the held-out change on E' (sampled at theta_0,
importance-weighted to theta_k, with its ESS) and, on an enumerable policy, the
exact change H(theta_k) - H(theta_0). The control removes the path: the endpoint
linearisation grad H_0 . (theta_k - theta_0) on E_0. Each step reports its clip
fraction (share of the minibatch's tokens whose ratio is outside the band) so a
user sees whether clipping acted. The U-side error (a jackknife over U) is not
estimated here: the SEs are conditional on U.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

import numpy as np
import torch

from rl_onoff.entropy import estimators as est
from rl_onoff.entropy.analysis import mean_se
from rl_onoff.entropy.policy import Group, token_terms, trainable
from rl_onoff.entropy.probe import (PhaseTimer, ProbeSettings, change_summary, check_real_step,
                                    entropy_dots, held_out_comparison, require_signal)
from rl_onoff.entropy.update import Updater, ascend, parameters_vector, restore


@dataclass(frozen=True)
class PathSettings:
    minibatches: int = 1       # U's prompts split into this many minibatches, one step each
    epochs: int = 1            # passes over the minibatches

    @property
    def steps(self) -> int:
        return self.minibatches * self.epochs


class ExactTruth(Protocol):
    """An enumerable policy's exact entropies and their gradients at the current weights."""

    def __call__(self) -> dict[str, float]: ...

    def gradients(self) -> dict[str, torch.Tensor]: ...


def minibatch_indices(count: int, minibatches: int) -> list[list[int]]:
    """`count` prompts in `minibatches` contiguous near-equal parts (the first ones larger)."""
    if not 1 <= minibatches <= count:
        raise ValueError(f"{minibatches} minibatches of {count} prompts: allowed 1 to {count}")
    return [part.tolist() for part in np.array_split(np.arange(count), minibatches)]


def ppo_path(model, u_groups: list[Group], sample_e: Callable[[int], list[Group]],
             updater: Updater, settings: ProbeSettings, path: PathSettings,
             heldout_groups: list[Group] | None = None, timer: PhaseTimer | None = None,
             exact: ExactTruth | None = None) -> dict:
    """Take the k real steps from the model's current weights (theta_0), predict their
    entropy change along the path, measure the truths, and put theta_0 back.

    `sample_e(j)` draws E_j from the model as it is at step j (theta_j)."""
    timer = timer or PhaseTimer()
    params, temperature = trainable(model), settings.temperature
    objective = settings.objective
    require_signal(u_groups, objective)
    theta0 = parameters_vector(params)
    with timer("u_old_logp"), torch.no_grad():
        old_logps = [token_terms(model, g, temperature).logp for g in u_groups]
    heldout_anchors = None
    if heldout_groups:
        with timer("heldout_anchor"):
            heldout_anchors = est.anchors_at(model, heldout_groups, temperature)
    exact_before = exact() if exact else None
    exact_grad0 = exact.gradients() if exact else None
    optimizer = updater.optimizer(settings.lr)
    parts = minibatch_indices(len(u_groups), path.minibatches)
    steps, theta, e0_groups, mismatch = [], theta0, None, None
    previous = torch.zeros_like(theta0)   # Dtheta_{j-1}
    exact_path = {k: 0.0 for k in est.KINDS}
    exact_trapezoid = {k: 0.0 for k in est.KINDS}
    try:
        for j in range(path.steps):
            e_groups = sample_e(j)
            e0_groups = e0_groups or e_groups
            exact_grad = exact.gradients() if exact else None
            batch = parts[j % path.minibatches]
            counts = []
            with timer("u_gradient"):
                grad = sum(objective.gradients(model, [u_groups[i] for i in batch], params,
                                               temperature, old_logps=[old_logps[i] for i in batch],
                                               clip_counts=counts)) / len(batch)
            with timer("true_step"):
                ascend(optimizer, params, grad)
                after = parameters_vector(params)
                moved = after - theta
                if j == 0:   # the dtype can hold the step (later steps are of the same size)
                    mismatch = check_real_step(moved, settings.lr * updater.direction(grad, theta0),
                                               theta0, settings, params)
            weight = 0.5 * (previous + moved)   # w_j of the trapezoid
            with timer("e_gradient"):   # grad H_j at theta_j, dotted with Dtheta_j and w_j
                restore(params, theta)
                _, _, dots = entropy_dots(model, e_groups, params, temperature,
                                          torch.stack([moved, weight]))
                restore(params, after)
            outside, clipped, tokens = (sum(c[i] for c in counts) for i in range(3))
            step = {"step": j, "epoch": j // path.minibatches, "minibatch": j % path.minibatches,
                    "prompts": len(batch), "displacement_norm": float(moved.norm()),
                    "clip": {"outside_band": outside / tokens, "clipped": clipped / tokens,
                             "tokens": tokens},
                    "terms": _terms(dots, 0), "trapezoid_terms": _terms(dots, 1)}
            if exact:
                step["exact_first_order"] = {k: float(exact_grad[k] @ moved) for k in est.KINDS}
                step["exact_trapezoid"] = {k: float(exact_grad[k] @ weight) for k in est.KINDS}
                for k in est.KINDS:
                    exact_path[k] += step["exact_first_order"][k]
                    exact_trapezoid[k] += step["exact_trapezoid"][k]
            steps.append(step)
            theta, previous = after, moved
            if timer.log:
                timer.log(f"  step {j}: |Dtheta| {step['displacement_norm']:.3g}, clip fraction "
                          f"{step['clip']['outside_band']:.3f}")
        weight = 0.5 * previous   # w_k: the trapezoid's last end, grad H_k on E_k at theta_k
        e_groups = sample_e(path.steps)
        with timer("e_gradient"):
            _, _, dots = entropy_dots(model, e_groups, params, temperature, weight)
        moved = theta - theta0
        result = {"steps": steps, "trapezoid_end_term": _terms(dots),
                  "real_step_mismatch": mismatch}
        if heldout_anchors:
            with timer("heldout_truth"):
                result["_held_changes"] = est.entropy_changes(model, heldout_groups,
                                                              heldout_anchors, temperature)
        if exact:
            after, grad_k = exact(), exact.gradients()
            result["exact"] = {"entropy": exact_before,
                               "change": {k: after[k] - exact_before[k] for k in est.KINDS},
                               "first_order_path": exact_path,
                               "trapezoid_path": {k: exact_trapezoid[k] + float(grad_k[k] @ weight)
                                                  for k in est.KINDS},
                               "first_order_endpoint": {k: float(exact_grad0[k] @ moved)
                                                        for k in est.KINDS}}
        restore(params, theta0)
        with timer("endpoint_control"):   # grad H_0 on E_0 against the whole displacement
            _, _, end_dots = entropy_dots(model, e0_groups, params, temperature, moved)
    finally:
        restore(params, theta0)
    return _summarise(result, end_dots, heldout_anchors, settings, path, u_groups, timer)


def _terms(dots: dict, column: int | None = None) -> dict:
    """Per kind, the mean and SE over E's prompts of one direction's dot products."""
    return {k: dict(zip(("value", "se"), mean_se(dots[k] if column is None
                                                 else dots[k][:, column])))
            for k in est.KINDS}


def _sum_terms(terms: list[dict]) -> dict:
    """Per kind, the sum of independent batches' terms and its SE sqrt(sum SE^2)."""
    return {k: {"value": float(sum(t[k]["value"] for t in terms)),
                "se_cond": float(np.sqrt(sum(t[k]["se"] ** 2 for t in terms)))}
            for k in est.KINDS}


def _summarise(result: dict, end_dots: dict, heldout_anchors, settings: ProbeSettings,
               path: PathSettings, u_groups: list[Group], timer: PhaseTimer) -> dict:
    steps = result["steps"]
    prediction = _sum_terms([s["terms"] for s in steps])
    trapezoid = _sum_terms([s["trapezoid_terms"] for s in steps] + [result["trapezoid_end_term"]])
    endpoint = {k: dict(zip(("value", "se_cond"), mean_se(end_dots[k]))) for k in est.KINDS}
    held_changes = result.pop("_held_changes", None)
    if held_changes:
        truth = change_summary(held_changes[0], heldout_anchors)
        result["held_out"] = held_out_comparison(prediction, truth, held_changes[1],
                                                 settings.min_ess_share)
        result["endpoint_held_out"] = held_out_comparison(endpoint, truth, held_changes[1],
                                                          settings.min_ess_share)
        result["trapezoid_held_out"] = held_out_comparison(trapezoid, truth, held_changes[1],
                                                           settings.min_ess_share)
    rewards = np.array([r for g in u_groups for r in g.rewards], dtype=float)
    result.update({
        "lr": settings.lr, "steps_k": path.steps, "minibatches": path.minibatches,
        "epochs": path.epochs, "batch_u": len(u_groups),
        "batch_heldout": len(heldout_anchors) if heldout_anchors else 0,
        "u_batch": {"questions": [g.question for g in u_groups],
                    "reward_mean": float(rewards.mean()),
                    "groups_with_signal": sum(len(set(g.rewards)) > 1 for g in u_groups)},
        "path_prediction": prediction, "trapezoid_prediction": trapezoid,
        "endpoint_control": endpoint,
        "timings": dict(timer.seconds)})
    return result
