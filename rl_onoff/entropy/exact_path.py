"""05-entropy exact with k > 1 PPO steps: the path prediction against the exact change.

Each run draws a fresh U and E' at theta_0 and, through `ppo_path`, a fresh E_j at
each theta_j; the k real steps are the same torch optimizer's. Over the runs, per kind:

    first order   z = (path prediction - exact path sum grad H(theta_j) . Dtheta_j) / SE:
                  mean 0, SD about 1 when the estimator is right (the verdict `passes`)
    bias          the same z against the exact change: it adds the steps' Taylor remainders
                  (second order in each step; reported as a share of the change)
    trapezoid     the second-order path prediction sum_j grad H_j . w_j (k+1 batches) against
                  the exact change (its bias, z and SD: reported, not the verdict) and against
                  the exact trapezoid sum grad H(theta_j) . w_j (is the estimator unbiased)
    control       the endpoint linearisation grad H_0 . (theta_k - theta_0) against the exact
                  change: what the path adds (it fails when the gradient moves along the path)
    held-out      (Delta-H' - exact change) / SE'

The z of a sum of k batch means over B_E prompts each is about Student-t with
k (B_E - 1) degrees of freedom (equal variances): its reference SD is that t's.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from rl_onoff.entropy import analysis
from rl_onoff.entropy.estimators import KINDS
from rl_onoff.entropy.exact import Setup
from rl_onoff.entropy.path import PathSettings, ppo_path


def run_exact_path(cfg, progress: bool = True) -> dict:
    """`cfg.exact.runs` runs of k = ppo_minibatches x ppo_epochs steps; rows and verdicts."""
    from tqdm import tqdm

    c = cfg.exact
    setup = Setup.of(cfg)
    path = PathSettings(cfg.ppo_minibatches, cfg.ppo_epochs)
    rows, skipped = [], 0
    for r in tqdm(range(c.runs), desc=f"05-entropy exact, {path.steps} PPO steps", unit="run",
                  disable=not progress):
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + r)
        u_groups = setup.sample(cfg, c.batch_u, gen, True)
        h_groups = setup.sample(cfg, c.batch_e, gen, False)
        try:
            result = ppo_path(setup.policy, u_groups,
                              lambda j, gen=gen: setup.sample(cfg, c.batch_e, gen, False),
                              setup.updater,
                              setup.settings, path, heldout_groups=h_groups, exact=setup.truth)
        except ValueError as err:   # no reward signal in U: no step to predict
            if "no reward signal" not in str(err):
                raise
            skipped += 1
            continue
        ex = result["exact"]
        rows.append({"run": r, "ess_min_share": result["held_out"]["ess"]["min_share"],
                     "clip_outside_band": [s["clip"]["outside_band"] for s in result["steps"]],
                     "clipped": [s["clip"]["clipped"] for s in result["steps"]],
                     **{kind: {
                         "path": result["path_prediction"][kind]["value"],
                         "se": result["path_prediction"][kind]["se_cond"],
                         "trapezoid": result["trapezoid_prediction"][kind]["value"],
                         "trapezoid_se": result["trapezoid_prediction"][kind]["se_cond"],
                         "endpoint": result["endpoint_control"][kind]["value"],
                         "endpoint_se": result["endpoint_control"][kind]["se_cond"],
                         "held_out": result["held_out"][kind]["value"],
                         "held_out_se": result["held_out"][kind]["se"],
                         "exact_change": ex["change"][kind],
                         "exact_first_order_path": ex["first_order_path"][kind],
                         "exact_trapezoid_path": ex["trapezoid_path"][kind],
                         "exact_first_order_endpoint": ex["first_order_endpoint"][kind]}
                        for kind in KINDS}})
    if len(rows) < 3:
        raise RuntimeError(f"exact: only {len(rows)} of {c.runs} runs had a reward signal in U")
    kinds = {kind: summarise_path_kind([row[kind] for row in rows], c.alpha, c.batch_e, path.steps)
             for kind in KINDS}
    clip = np.array([row["clip_outside_band"] for row in rows])
    return {"runs": rows, "skipped_no_signal": skipped, "policy": setup.describe(cfg),
            "lr": c.lr, "alpha": c.alpha, "steps_k": path.steps,
            "minibatches": path.minibatches, "epochs": path.epochs,
            "clip_outside_band_mean_per_step": clip.mean(0).tolist(),
            "clipped_mean_per_step": np.array([row["clipped"] for row in rows]).mean(0).tolist(),
            "kinds": kinds}


def path_t_sd(prompts: int, steps: int) -> float:
    """Reference SD of z for a sum of `steps` means over `prompts` items each."""
    df = steps * (prompts - 1)
    return math.sqrt(df / (df - 2))


def summarise_path_kind(rows: list[dict], alpha: float, prompts: int, steps: int) -> dict:
    get = {k: np.array([row[k] for row in rows]) for k in rows[0]}
    change, path, se = get["exact_change"], get["path"], get["se"]
    sd_path, sd_one = path_t_sd(prompts, steps), analysis.student_sd(prompts)
    bias = analysis.z_summary((path - change) / se, alpha, sd_path)
    first_order = analysis.z_summary((path - get["exact_first_order_path"]) / se, alpha, sd_path)
    endpoint = analysis.z_summary((get["endpoint"] - change) / get["endpoint_se"], alpha, sd_one)
    held = analysis.z_summary((get["held_out"] - change) / get["held_out_se"], alpha, sd_one)
    trap, trap_se, sd_trap = get["trapezoid"], get["trapezoid_se"], path_t_sd(prompts, steps + 1)
    trap_bias = analysis.z_summary((trap - change) / trap_se, alpha, sd_trap)
    trap_own = analysis.z_summary((trap - get["exact_trapezoid_path"]) / trap_se, alpha, sd_trap)
    scale = float(np.mean(np.abs(change)))
    gap, gap_se = analysis.mean_se(path - change)
    trap_gap, trap_gap_se = analysis.mean_se(trap - change)
    end_gap, end_gap_se = analysis.mean_se(get["endpoint"] - change)
    entry = {
        "path_vs_exact_change": bias, "path_vs_exact_first_order_path": first_order,
        "endpoint_vs_exact_change": endpoint, "held_out_vs_exact_change": held,
        "trapezoid_vs_exact_change": trap_bias, "trapezoid_vs_exact_trapezoid_path": trap_own,
        "mean_abs_exact_change": scale,
        "relative_bias": gap / scale, "se_relative_bias": gap_se / scale,
        "endpoint_relative_bias": end_gap / scale, "endpoint_se_relative_bias": end_gap_se / scale,
        "trapezoid_relative_bias": trap_gap / scale,
        "trapezoid_se_relative_bias": trap_gap_se / scale,
        "path_remainder_share": float(np.mean(np.abs(change - get["exact_first_order_path"]))
                                      / scale),
        "endpoint_remainder_share": float(np.mean(np.abs(change - get["exact_first_order_endpoint"]))
                                          / scale),
        "trapezoid_remainder_share": float(np.mean(np.abs(change - get["exact_trapezoid_path"]))
                                           / scale)}
    entry["verdict"] = (
        f"path prediction {_word(first_order)} against the exact first-order path sum (mean z "
        f"{first_order['mean']:+.2f} +- {first_order['se_mean']:.2f}, SD {first_order['sd']:.2f} "
        f"+- {first_order['se_sd']:.2f}, t reference {sd_path:.2f}) and {_word(bias)} against the "
        f"exact change of the {steps} steps (bias {entry['relative_bias']:+.1%} +- "
        f"{entry['se_relative_bias']:.1%}, mean z {bias['mean']:+.2f}, SD {bias['sd']:.2f}; Taylor "
        f"remainder of the steps {entry['path_remainder_share']:.1%}); endpoint control "
        f"{_word(endpoint)} (bias {entry['endpoint_relative_bias']:+.1%} +- "
        f"{entry['endpoint_se_relative_bias']:.1%}, mean z {endpoint['mean']:+.2f}); held-out truth "
        f"{_word(held)} against the exact change (mean z {held['mean']:+.2f}, SD {held['sd']:.2f}); "
        f"{len(rows)} runs"
        f"\n  trapezoid (2nd order, not the verdict): {_word(trap_bias)} against the exact change "
        f"of the {steps} steps (bias {entry['trapezoid_relative_bias']:+.1%} +- "
        f"{entry['trapezoid_se_relative_bias']:.1%}, mean z {trap_bias['mean']:+.2f} +- "
        f"{trap_bias['se_mean']:.2f}, SD {trap_bias['sd']:.2f}, t reference {sd_trap:.2f}; "
        f"remainder of the exact trapezoid {entry['trapezoid_remainder_share']:.1%}); "
        f"{_word(trap_own)} against the exact trapezoid sum (mean z {trap_own['mean']:+.2f}, "
        f"SD {trap_own['sd']:.2f})")
    entry["passes"] = first_order["unbiased"] and first_order["calibrated"]
    return entry


def _word(z: dict) -> str:
    return "unbiased" if z["unbiased"] else "BIASED"
