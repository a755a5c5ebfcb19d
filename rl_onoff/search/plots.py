"""03-tree-search's PNG plot: accuracy against lambda with 95% intervals, controls beside it.
Colours tell the methods apart, markers the models."""

from __future__ import annotations

from pathlib import Path

from rl_onoff import io
from rl_onoff.colors import short_name

# (metric, colour, line style, what it is)
LINES = (("tree_vote", "tab:blue", "-", "tree: vote over leaves"),
         ("tree_best", "tab:cyan", ":", "tree: best by reward"),
         ("prefix_shared_maj", "tab:orange", "--", "prefix-shared sampling: maj@n"),
         ("sampling_maj", "tab:red", "-.", "plain sampling: maj@n"))
MARKERS = "osD^v<>"


def accuracy_vs_lambda(summary: dict, grid: list, path: Path) -> Path:
    """Per (C, alpha) a panel: accuracy of the tree and of its sampling controls (each at that
    tree's budget) against lambda, log scale, the smallest lambda being the reward-blind twin;
    error bars: 95% intervals (lines drawn slightly apart on x to stay readable)."""
    from matplotlib.figure import Figure

    shapes = sorted({(s.widen_c, s.widen_alpha) for s in grid})
    fig = Figure(figsize=(max(7.0, 5.5 * len(shapes)), 5.5), layout="constrained")
    axes = fig.subplots(1, len(shapes), squeeze=False)[0]
    for ax, (c, alpha) in zip(axes, shapes):
        points = sorted((s for s in grid if (s.widen_c, s.widen_alpha) == (c, alpha)),
                        key=lambda s: s.lam)
        lams = [s.lam for s in points]
        for (name, m), marker in zip(summary["models"].items(), MARKERS):
            for i, (metric, color, style, what) in enumerate(LINES):
                entries = [m["settings"][s.label]["accuracy"][metric] for s in points]
                mean = [e["mean"] for e in entries]
                lo = [e["lo"] if e["lo"] is not None else e["mean"] for e in entries]
                hi = [e["hi"] if e["hi"] is not None else e["mean"] for e in entries]
                oracle = " (oracle)" if entries[0]["oracle"] else ""
                shift = 1.3 ** (i - 1.5)  # apart on the log x axis
                ax.errorbar([x * shift for x in lams], mean,
                            yerr=[[a - b for a, b in zip(mean, lo)], [b - a for a, b in zip(mean, hi)]],
                            color=color, linestyle=style, marker=marker, markersize=4, capsize=3,
                            linewidth=1.5, label=f"{short_name(name)}: {what}{oracle}")
        ax.set_xscale("log")
        ax.set(xlabel="lambda (smallest: reward-blind control)", ylabel="accuracy",
               title=f"C={c:g}, alpha={alpha:g}", ylim=(-0.02, 1.02))
        ax.grid(alpha=0.3)
    seeds = len(summary["seeds"])
    fig.suptitle(f"accuracy at equal budget; reward {summary['reward']}; 95% bootstrap "
                 f"(questions, {seeds} seed(s))", fontsize=10)
    fig.legend(*axes[0].get_legend_handles_labels(), fontsize=8, loc="outside lower center", ncols=2)
    io.save_figure(path, fig)
    return path
