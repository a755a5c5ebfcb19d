"""Statistics over runs: standard errors, the 1/B_E bias test, SE calibration, linearity in eta.

Plain numpy, no model code, so each number can be checked against an
independent computation. p-values are two-sided, from the normal distribution.
"""

from __future__ import annotations

import math

import numpy as np


def mean_se(values) -> tuple[float, float]:
    """(mean, standard error of the mean) with the n-1 variance."""
    x = np.asarray(values, dtype=float)
    if len(x) < 2:
        return float(x.mean()), float("nan")
    return float(x.mean()), float(x.std(ddof=1) / math.sqrt(len(x)))


def jackknife_se(leave_one_out) -> float:
    """Jackknife standard error from the n leave-one-out values of a statistic."""
    x = np.asarray(leave_one_out, dtype=float)
    n = len(x)
    return float(math.sqrt((n - 1) / n * ((x - x.mean()) ** 2).sum()))


def p_two_sided(z: float) -> float:
    return float(math.erfc(abs(z) / math.sqrt(2)))


def weighted_fit(x, y, se) -> dict:
    """Weighted least squares y = a + b x with weights 1/se^2.

    Returns a, b, their standard errors (from the weights), z and p of b = 0 and
    the reduced chi^2 (about 1 when the line and the error bars fit the points).
    """
    x, y, se = (np.asarray(v, dtype=float) for v in (x, y, se))
    if len(x) < 3:
        raise ValueError("a line with a test of its slope needs at least 3 points")
    if not np.all(se > 0):
        raise ValueError("every point needs a positive standard error")
    w = 1.0 / se ** 2
    design = np.stack([np.ones_like(x), x], axis=1)
    cov = np.linalg.inv(design.T @ (w[:, None] * design))
    a, b = cov @ design.T @ (w * y)
    resid = y - (a + b * x)
    z = b / math.sqrt(cov[1, 1])
    return {"a": float(a), "b": float(b), "se_a": float(math.sqrt(cov[0, 0])),
            "se_b": float(math.sqrt(cov[1, 1])), "z_b": float(z), "p_b": p_two_sided(z),
            "chi2_reduced": float((w * resid ** 2).sum() / (len(x) - 2))}


def batch_scaling(levels: dict[int, list[float]], alpha: float = 0.01) -> dict:
    """Is the mean of delta-H1 flat in 1/B_E, and does its spread fall like B_E^-1/2?

    `levels` maps B_E to the delta-H1 of independent runs. The mean fit is
    a + b / B_E weighted by each level's SE of the mean; a biased estimator
    (mean moving like 1/B_E) shows b != 0. The spread is the SD per level; its
    log-log slope against B_E should be -1/2 (SE of log SD: 1/sqrt(2(n-1))).
    """
    sizes = sorted(levels)
    rows = []
    for b in sizes:
        x = np.asarray(levels[b], dtype=float)
        mean, se = mean_se(x)
        rows.append({"batch_e": b, "runs": len(x), "mean": mean, "se_mean": se,
                     "sd": float(x.std(ddof=1))})
    fit = weighted_fit([1.0 / r["batch_e"] for r in rows], [r["mean"] for r in rows],
                       [r["se_mean"] for r in rows])
    spread = weighted_fit([math.log(r["batch_e"]) for r in rows], [math.log(r["sd"]) for r in rows],
                          [1.0 / math.sqrt(2 * (r["runs"] - 1)) for r in rows])
    slope_z = (spread["b"] + 0.5) / spread["se_b"]
    unbiased, scales = fit["p_b"] >= alpha, p_two_sided(slope_z) >= alpha
    verdict = ("consistent with unbiased (no 1/B_E term)" if unbiased else
               "BIASED: the mean moves like 1/B_E")
    verdict += ("; spread falls like B_E^-1/2" if scales else
                f"; spread slope {spread['b']:.2f} differs from -1/2")
    return {"levels": rows, "mean_fit": fit,
            "spread_fit": {"slope": spread["b"], "se_slope": spread["se_b"], "z_vs_minus_half": slope_z,
                           "p_vs_minus_half": p_two_sided(slope_z)},
            "alpha": alpha, "unbiased": bool(unbiased), "spread_ok": bool(scales), "verdict": verdict}


def paired_bias(first, true) -> dict:
    """z-test of mean(Delta-H_true - delta-H1) = 0 over independent runs (the gap of the
    first-order prediction, paired: both come from the same E batch)."""
    d = np.asarray(true, dtype=float) - np.asarray(first, dtype=float)
    mean, se = mean_se(d)
    z = mean / se if se > 0 else float("inf") * np.sign(mean)
    return {"mean_difference": mean, "se": se, "z": float(z), "p": p_two_sided(z),
            "mean_true": float(np.mean(true)), "mean_first_order": float(np.mean(first)),
            "relative_bias": mean / float(np.mean(true)) if np.mean(true) != 0 else None}


def calibration(values, ses, alpha: float = 0.01) -> dict:
    """Do the reported SEs match the spread of independent repeats?

    z_k = (x_k - mean x) / se_k; its SD should be about 1 (its own SE is about
    1/sqrt(2(n-1)) for normal z). Calibrated: that SD is within the two-sided
    alpha-level band around 1. Also the ratio of the empirical SD of x to the RMS of se.
    """
    x, s = np.asarray(values, dtype=float), np.asarray(ses, dtype=float)
    n = len(x)
    if n < 3:
        raise ValueError("SE calibration needs at least 3 runs")
    z = (x - x.mean()) / s * math.sqrt(n / (n - 1))   # x - mean shrinks the spread by (n-1)/n
    sd_z = float(np.sqrt((z ** 2).mean()))
    se_sd = 1.0 / math.sqrt(2 * (n - 1))
    return {"runs": n, "z": z.tolist(), "sd_z": sd_z, "se_sd_z": se_sd,
            "sd_over_rms_se": float(x.std(ddof=1) / math.sqrt((s ** 2).mean())),
            "calibrated": bool(p_two_sided((sd_z - 1) / se_sd) >= alpha)}


def linearity(lrs, true, first, tolerance: float = 0.1) -> dict:
    """Where Delta-H_true is linear in eta, i.e. within `tolerance` (relative) of delta-H1.

    Two things end the linear range: curvature above (the deviation grows like eta)
    and precision below (rounding noise in Delta-H_true stays put while the change
    shrinks like eta). The range is the run of etas within tolerance around the
    best-agreeing one; the log-log slope of |Delta-H_true| over it should be 1.
    """
    order = np.argsort(lrs)
    eta = np.asarray(lrs, dtype=float)[order]
    t = np.asarray(true, dtype=float)[order]
    f = np.asarray(first, dtype=float)[order]
    rel = np.abs(t / f - 1)
    best = int(np.argmin(rel))
    lo = hi = best
    while lo > 0 and rel[lo - 1] <= tolerance:
        lo -= 1
    while hi < len(eta) - 1 and rel[hi + 1] <= tolerance:
        hi += 1
    linear = rel[best] <= tolerance
    span = slice(lo, hi + 1)
    slope = (float(np.polyfit(np.log(eta[span]), np.log(np.abs(t[span])), 1)[0])
             if linear and hi > lo else None)
    return {"lrs": eta.tolist(), "delta_h_true": t.tolist(), "delta_h1": f.tolist(),
            "relative_deviation": rel.tolist(), "tolerance": tolerance, "slope_linear_range": slope,
            "linear_from_lr": float(eta[lo]) if linear else None,
            "linear_up_to_lr": float(eta[hi]) if linear else None,
            "nonlinear_from_lr": float(eta[hi + 1]) if linear and hi + 1 < len(eta) else None,
            "precision_floor_below_lr": float(eta[lo]) if linear and lo > 0 else None}


def z_summary(z, alpha: float = 0.01, expected_sd: float = 1.0) -> dict:
    """Are z-scores N(0, 1)? Their mean should be 0 (SE 1/sqrt(n): no bias) and their SD
    `expected_sd` (SE about that/sqrt(2(n-1)): the standard errors are calibrated). A mean over
    m items divided by its own estimated SE is Student-t: expected SD sqrt((m-1)/(m-3))."""
    x = np.asarray(z, dtype=float)
    n = len(x)
    if n < 3:
        raise ValueError("a z summary needs at least 3 runs")
    mean, sd = float(x.mean()), float(x.std(ddof=1))
    se_sd = expected_sd / math.sqrt(2 * (n - 1))
    p_mean = p_two_sided(mean * math.sqrt(n) / expected_sd)
    return {"runs": n, "mean": mean, "se_mean": expected_sd / math.sqrt(n), "p_mean": p_mean,
            "sd": sd, "expected_sd": expected_sd, "se_sd": se_sd, "unbiased": bool(p_mean >= alpha),
            "calibrated": bool(p_two_sided((sd - expected_sd) / se_sd) >= alpha)}


def student_sd(items: int) -> float:
    """SD of a t variable with items - 1 degrees of freedom (inf below 4 items)."""
    return math.sqrt((items - 1) / (items - 3)) if items > 3 else float("inf")
