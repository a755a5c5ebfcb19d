"""05-entropy exact with k > 1 PPO steps: the path prediction against the exact change.

Each run draws a fresh U and E' at theta_0 and, through `ppo_path`, a fresh E_j at
each theta_j; the k real steps are the same torch optimizer's. Over the runs, per kind:

    first order   z = (path prediction - exact path sum grad H(theta_j) . Dtheta_j) / SE:
                  mean 0, SD about 1 when the estimator is right (the verdict `passes`)
    bias          the same z against the exact change: it adds the steps' Taylor remainders
                  (second order in each step; reported as a share of the change)
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
                         "endpoint": result["endpoint_control"][kind]["value"],
                         "endpoint_se": result["endpoint_control"][kind]["se_cond"],
                         "held_out": result["held_out"][kind]["value"],
                         "held_out_se": result["held_out"][kind]["se"],
                         "exact_change": ex["change"][kind],
                         "exact_first_order_path": ex["first_order_path"][kind],
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
    scale = float(np.mean(np.abs(change)))
    gap, gap_se = analysis.mean_se(path - change)
    end_gap, end_gap_se = analysis.mean_se(get["endpoint"] - change)
    entry = {
        "path_vs_exact_change": bias, "path_vs_exact_first_order_path": first_order,
        "endpoint_vs_exact_change": endpoint, "held_out_vs_exact_change": held,
        "mean_abs_exact_change": scale,
        "relative_bias": gap / scale, "se_relative_bias": gap_se / scale,
        "endpoint_relative_bias": end_gap / scale, "endpoint_se_relative_bias": end_gap_se / scale,
        "path_remainder_share": float(np.mean(np.abs(change - get["exact_first_order_path"]))
                                      / scale),
        "endpoint_remainder_share": float(np.mean(np.abs(change - get["exact_first_order_endpoint"]))
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
        f"{len(rows)} runs")
    entry["passes"] = first_order["unbiased"] and first_order["calibrated"]
    return entry


def _word(z: dict) -> str:
    return "unbiased" if z["unbiased"] else "BIASED"
