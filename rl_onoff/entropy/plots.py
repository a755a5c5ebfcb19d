"""05-entropy's figures (matplotlib, Agg): one row per entropy kind, the model in its own colour."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from rl_onoff import io
from rl_onoff.colors import color_for
from rl_onoff.entropy.estimators import KINDS

LABELS = {"sequence": "sequence entropy  -log pi(y)",
          "token_mean": "token entropy, per-response mean",
          "token_weighted": "token entropy, length-weighted"}


def _figure(rows: int, cols: int, width: float = 5.2, height: float = 4.0):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    return fig, axes


def _save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    io.save_figure(path, fig)
    plt.close(fig)


def _diagonal(ax, x, y) -> None:
    lo, hi = min(np.min(x), np.min(y)), max(np.max(x), np.max(y))
    pad = 0.05 * (hi - lo or abs(hi) or 1.0)
    ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="0.5", lw=1, ls="--", label="y = x")


def single(result: dict, path: Path, model: str) -> None:
    """Per prompt: delta-H1 on E against the held-out change on E' (independent: scatter is
    noise; the means are what must agree), with the linearisation check on E beside it."""
    fig, axes = _figure(1, len(KINDS))
    color = color_for(model)
    for ax, kind in zip(axes[0], KINDS):
        per = result["per_prompt"][kind]
        f, h = result["delta_h1"][kind], result["held_out"][kind]
        ax.scatter(per["delta_h1"], per["linearisation_check"], s=14, color="0.55",
                   label="E: linearisation check (same responses)")
        ax.errorbar([f["value"]], [h["value"]], xerr=[2 * f["se_cond"]], yerr=[2 * h["se"]],
                    fmt="o", color=color, capsize=4, ms=8, label=f"batch means +- 2 SE, {model}")
        _diagonal(ax, np.append(per["delta_h1"], f["value"]),
                  np.append(per["linearisation_check"], h["value"]))
        ax.set_title(f"{LABELS[kind]}\ndelta-H1 {f['value']:.3g} +- {f['se_cond']:.2g}\n"
                     f"held-out {h['value']:.3g} +- {h['se']:.2g}, z = {h['z']:.2f}", fontsize=9)
        ax.ticklabel_format(style="sci", scilimits=(-2, 2))
        ax.set_xlabel("delta-H1 (first order, nats)")
        ax.set_ylabel("entropy change after the real step (nats)")
        ax.legend(fontsize=7)
    fig.suptitle(f"05-entropy single: lr {result['lr']:g}, B_E={result['batch_e']}, "
                 f"B_E'={result['batch_heldout']}, B_U={result['batch_u']}", fontsize=10)
    _save(fig, path)


def eta_sweep(linearity: dict, path: Path, model: str, optimizer: str) -> None:
    """|Delta-H_true| against eta on log-log axes, with the first-order line (slope 1)."""
    fig, axes = _figure(1, len(KINDS))
    color = color_for(model)
    for ax, kind in zip(axes[0], KINDS):
        lin = linearity[kind]
        eta, true, first = (np.asarray(lin[k]) for k in ("lrs", "delta_h_true", "delta_h1"))
        held = np.asarray(lin["held_out"])
        same = np.sign(true) == np.sign(first)
        ax.loglog(eta, np.abs(first), color="0.4", lw=1.2, label="|delta-H1| (first order)")
        ax.loglog(eta[same], np.abs(true[same]), "o", color=color,
                  label=f"|linearisation check| (same E), {model}")
        if (~same).any():
            ax.loglog(eta[~same], np.abs(true[~same]), "o", mfc="none", color=color,
                      label="|linearisation check|, opposite sign")
        ax.loglog(eta, np.abs(held), "x", color="0.2", label="|held-out change| (E')")
        if lin["linear_from_lr"] is not None:
            ax.axvspan(lin["linear_from_lr"], lin["linear_up_to_lr"], color="0.92",
                       label=f"within {lin['tolerance']:.0%} of first order")
        slope = lin["slope_linear_range"]
        ax.set_title(f"{LABELS[kind]}\nlog-log slope over the linear range: "
                     f"{'n/a' if slope is None else f'{slope:.3f}'}", fontsize=9)
        ax.set_xlabel(f"learning rate eta ({optimizer})")
        ax.set_ylabel("|entropy change| (nats)")
        ax.legend(fontsize=8)
    _save(fig, path)


def batch_scaling(kinds: dict, first: dict, path: Path, model: str) -> None:
    """Top: delta-H1 against 1/B_E with the weighted fit a + b/B_E. Bottom: spread against B_E."""
    fig, axes = _figure(2, len(KINDS))
    from matplotlib.ticker import NullLocator

    color = color_for(model)
    for col, kind in enumerate(KINDS):
        a = kinds[kind]
        ax = axes[0][col]
        for row in a["levels"]:
            runs = first[kind][row["batch_e"]]
            ax.scatter([1 / row["batch_e"]] * len(runs), runs, s=10, color=color, alpha=0.35)
        inv = np.array([1 / r["batch_e"] for r in a["levels"]])
        ax.errorbar(inv, [r["mean"] for r in a["levels"]], yerr=[2 * r["se_mean"] for r in a["levels"]],
                    fmt="o", color=color, capsize=3, label=f"mean +- 2 SE, {model}")
        fit = a["mean_fit"]
        grid = np.linspace(0, inv.max() * 1.05, 50)
        ax.plot(grid, fit["a"] + fit["b"] * grid, color="0.3", lw=1,
                label=f"a + b/B_E: b = {fit['b']:.2g} +- {fit['se_b']:.1g} (p={fit['p_b']:.2g})")
        ax.axhline(0, color="0.8", lw=0.8)
        ax.set_xlabel("1 / B_E")
        ax.set_ylabel("delta-H1 (nats)")
        ax.set_title(f"{LABELS[kind]}\n{a['verdict']}", fontsize=8)
        ax.legend(fontsize=7)

        ax = axes[1][col]
        sizes = np.array([r["batch_e"] for r in a["levels"]], dtype=float)
        sd = np.array([r["sd"] for r in a["levels"]])
        ax.loglog(sizes, sd, "o-", color=color, label="SD of delta-H1 over runs")
        ax.loglog(sizes, [r["rms_reported_se"] for r in a["levels"]], "s--",
                  color="0.5", mfc="none", label="RMS of reported SE (given U)")
        ref = sd[0] * (sizes / sizes[0]) ** -0.5
        ax.loglog(sizes, ref, color="0.7", lw=1, ls=":", label="slope -1/2")
        ax.set_xticks(sizes, [str(int(b)) for b in sizes])
        ax.xaxis.set_minor_locator(NullLocator())
        sp = a["spread_fit"]
        ax.set_title(f"spread slope {sp['slope']:.2f} +- {sp['se_slope']:.2f}", fontsize=9)
        ax.set_xlabel("B_E (prompts)")
        ax.set_ylabel("spread (nats)")
        ax.legend(fontsize=7)
    _save(fig, path)


def sanity_check(kinds: dict, path: Path, model: str) -> None:
    """Left: delta-H1 against the held-out change over runs. Right: z-scores of delta-H1 with U fixed."""
    fig, axes = _figure(len(KINDS), 2)
    color = color_for(model)
    for row, kind in enumerate(KINDS):
        entry = kinds[kind]
        ax = axes[row][0]
        x, y = np.asarray(entry["held_out"]), np.asarray(entry["first"])
        ax.scatter(x, y, s=20, color=color, label=f"runs (fresh U, E, E'), {model}")
        _diagonal(ax, x, y)
        b = entry["held_out_bias"]
        ax.set_title(f"{LABELS[kind]}\nheld-out gap {b['mean_difference']:.2g} +- {b['se']:.1g} "
                     f"(z={b['z']:.2f}), per-run z SD {entry['held_out_z']['sd']:.2f}", fontsize=9)
        ax.set_xlabel("held-out Delta-H' (real step on E', nats)")
        ax.set_ylabel("delta-H1 (first order, nats)")
        ax.legend(fontsize=8)
        ax = axes[row][1]
        cal = entry.get("conditional_se_calibration") or entry["total_se_calibration"]
        which = "U fixed, SE given U" if "conditional_se_calibration" in entry else "total SE"
        _z_histogram(ax, np.asarray(cal["z"]), color, f"z of delta-H1 ({which})")
        ax.set_title(f"SD of z = {cal['sd_z']:.2f} +- {cal['se_sd_z']:.2f} "
                     f"({'calibrated' if cal['calibrated'] else 'miscalibrated'})", fontsize=9)
        ax.set_xlabel("z = (delta-H1 - mean) / SE")
    _save(fig, path)


def _z_histogram(ax, z: np.ndarray, color, label: str) -> None:
    edges = np.linspace(-4, 4, 17)
    ax.hist(np.clip(z, -4, 4), bins=edges, density=True, color=color, alpha=0.6, label=label)
    grid = np.linspace(-4, 4, 200)
    ax.plot(grid, np.exp(-grid ** 2 / 2) / math.sqrt(2 * math.pi), color="0.3", label="N(0, 1)")
    ax.legend(fontsize=8)


def exact(summary: dict, runs: list[dict], path: Path) -> None:
    """Top: delta-H1 against the exact first-order change per run. Bottom: its z-scores."""
    fig, axes = _figure(2, len(KINDS))
    color = color_for("exact")
    for col, kind in enumerate(KINDS):
        entry = summary["kinds"][kind]
        fo = np.array([r[kind]["exact_first_order"] for r in runs])
        first = np.array([r[kind]["delta_h1"] for r in runs])
        se = np.array([r[kind]["se_cond"] for r in runs])
        ax = axes[0][col]
        ax.errorbar(fo, first, yerr=2 * se, fmt="o", ms=3, color=color, alpha=0.5, elinewidth=0.6)
        _diagonal(ax, fo, first)
        ax.set_title(f"{LABELS[kind]}\nbias {entry['relative_bias']:+.1%} +- "
                     f"{entry['se_relative_bias']:.1%} ({len(runs)} runs)", fontsize=9)
        ax.set_xlabel("exact first-order change grad H . Dtheta (nats)")
        ax.set_ylabel("delta-H1 +- 2 SE_cond (nats)")
        ax.legend(fontsize=8)
        b = entry["delta_h1_vs_exact_first_order"]
        _z_histogram(axes[1][col], (first - fo) / se, color, "z = (delta-H1 - exact) / SE_cond")
        axes[1][col].set_title(f"mean z {b['mean']:+.2f} +- {b['se_mean']:.2f}, SD {b['sd']:.2f} "
                               f"+- {b['se_sd']:.2f}", fontsize=9)
    fig.suptitle(f"05-entropy exact: tabular policy, {summary['policy']['responses']} responses, "
                 f"lr {summary['lr']:g}", fontsize=10)
    _save(fig, path)


TRAPEZOID = "#332288"   # the 2nd-order path prediction: indigo, in no model's palette colour


def path(result: dict, path: Path, model: str) -> None:
    """Per kind: the path prediction summed step by step (+- 2 SE), with the trapezoid (2nd
    order; only its total: its terms regroup the steps), the held-out truth and the endpoint
    control after the k steps; last panel: the clip fraction of each step."""
    fig, axes = _figure(1, len(KINDS) + 1, width=4.6)
    color = color_for(model)
    steps = result["steps"]
    k = len(steps)
    x = np.arange(k + 1)
    for ax, kind in zip(axes[0], KINDS):
        values = np.cumsum([0.0] + [s["terms"][kind]["value"] for s in steps])
        ses = np.sqrt(np.cumsum([0.0] + [s["terms"][kind]["se"] ** 2 for s in steps]))
        ax.plot(x, values, "o-", color=color, label="path: sum of grad H_j . Dtheta_j")
        ax.fill_between(x, values - 2 * ses, values + 2 * ses, color=color, alpha=0.2)
        held, end = result["held_out"][kind], result["endpoint_control"][kind]
        trap = result["trapezoid_prediction"][kind]
        ax.errorbar([k + 0.24], [held["value"]], yerr=[2 * held["se"]], fmt="s", color="0.2",
                    capsize=4, label=f"held-out truth on E' (path z = {held['z']:+.2f})")
        ax.errorbar([k + 0.12], [trap["value"]], yerr=[2 * trap["se_cond"]], fmt="D",
                    color=TRAPEZOID, capsize=4, label="trapezoid (2nd order), z = "
                    f"{result['trapezoid_held_out'][kind]['z']:+.2f}")
        ax.errorbar([k - 0.12], [end["value"]], yerr=[2 * end["se_cond"]], fmt="^", color="0.6",
                    capsize=4, label="endpoint control grad H_0 . (theta_k - theta_0)")
        ax.axhline(0, color="0.8", lw=0.8)
        ax.set_xticks(x)
        ax.set_xlabel("real optimizer steps taken")
        ax.set_ylabel("entropy change (nats), +- 2 SE")
        ax.set_title(LABELS[kind], fontsize=9)
        ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
        ax.legend(fontsize=7)
    ax = axes[0][-1]
    ax.bar(np.arange(k) - 0.2, [s["clip"]["outside_band"] for s in steps], 0.4, color=color,
           label="ratio outside the band")
    ax.bar(np.arange(k) + 0.2, [s["clip"]["clipped"] for s in steps], 0.4, color="0.6",
           label="gradient clipped (verl pg_clipfrac)")
    ax.set_xticks(np.arange(k))
    ax.set_xlabel("step j (its minibatch's tokens at theta_j)")
    ax.set_ylabel("share of tokens")
    ax.set_title("PPO-clip activity", fontsize=9)
    ax.legend(fontsize=7)
    fig.suptitle(f"05-entropy single, {model}: {k} PPO steps ({result['minibatches']} minibatches "
                 f"x {result['epochs']} epochs), lr {result['lr']:g}", fontsize=10)
    _save(fig, path)


def exact_path(summary: dict, runs: list[dict], path: Path) -> None:
    """Top: the path prediction, the trapezoid (2nd order) and the endpoint control against the
    exact change of the k steps, per run. Bottom: their z-scores against the exact change."""
    fig, axes = _figure(2, len(KINDS))
    color = color_for("exact")
    for col, kind in enumerate(KINDS):
        entry = summary["kinds"][kind]
        change = np.array([r[kind]["exact_change"] for r in runs])
        pred, se = (np.array([r[kind][key] for r in runs]) for key in ("path", "se"))
        end, end_se = (np.array([r[kind][key] for r in runs]) for key in ("endpoint", "endpoint_se"))
        trap, trap_se = (np.array([r[kind][key] for r in runs])
                         for key in ("trapezoid", "trapezoid_se"))
        ax = axes[0][col]
        ax.plot(change, end, "^", ms=3, color="0.6", alpha=0.6, label="endpoint control")
        ax.errorbar(change, pred, yerr=2 * se, fmt="o", ms=3, color=color, alpha=0.5,
                    elinewidth=0.6, label="path prediction (1st order) +- 2 SE")
        ax.plot(change, trap, "D", ms=2.5, color=TRAPEZOID, alpha=0.6, label="trapezoid (2nd order)")
        _diagonal(ax, change, np.concatenate([pred, end, trap]))
        ax.set_title(f"{LABELS[kind]}, bias vs exact change ({len(runs)} runs):\npath "
                     f"{entry['relative_bias']:+.1%} +- {entry['se_relative_bias']:.1%}, trapezoid "
                     f"{entry['trapezoid_relative_bias']:+.1%} +- "
                     f"{entry['trapezoid_se_relative_bias']:.1%}, endpoint "
                     f"{entry['endpoint_relative_bias']:+.1%}", fontsize=9)
        ax.set_xlabel(f"exact change after {summary['steps_k']} steps (nats)")
        ax.set_ylabel("predicted change (nats)")
        ax.legend(fontsize=7)
        ax = axes[1][col]
        edges = np.linspace(-4, 4, 17)
        ax.hist(np.clip((end - change) / end_se, -4, 4), bins=edges, density=True, color="0.6",
                alpha=0.5, label="endpoint control")
        ax.hist(np.clip((trap - change) / trap_se, -4, 4), bins=edges, density=True,
                histtype="step", lw=1.8, color=TRAPEZOID, label="trapezoid (2nd order)")
        _z_histogram(ax, (pred - change) / se, color, "path prediction (1st order)")
        b, t = entry["path_vs_exact_change"], entry["trapezoid_vs_exact_change"]
        ax.set_title(f"z vs exact change: path mean {b['mean']:+.2f} +- {b['se_mean']:.2f}, "
                     f"SD {b['sd']:.2f}\ntrapezoid mean {t['mean']:+.2f} +- {t['se_mean']:.2f}, "
                     f"SD {t['sd']:.2f}", fontsize=9)
        ax.set_xlabel("z = (prediction - exact change) / SE")
    fig.suptitle(f"05-entropy exact: tabular policy, {summary['steps_k']} PPO steps "
                 f"({summary['minibatches']} minibatches x {summary['epochs']} epochs), lr "
                 f"{summary['lr']:g}", fontsize=10)
    _save(fig, path)
