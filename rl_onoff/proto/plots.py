"""04-proto's PNGs: training curves, the token error map, the capacity sweep."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rl_onoff import io
from rl_onoff.colors import color_for

MAP_WIDTH = 64          # characters per row of the error map


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def training_curves(curves: dict, lr: np.ndarray, embedding_norm: float, max_grad_norm,
                    model: str, title: str, path: Path, xlabel: str = "step") -> None:
    """Six panels over steps: a thin line per text (and restart), their median in the
    model's colour. `curves[name]` is (steps x lines), NaN where a line was not training."""
    plt = _pyplot()
    color = color_for(model)
    fig, axes = plt.subplots(2, 3, figsize=(15, 8))
    panels = [("loss", "cross-entropy (mean over tokens)", True),
              ("accuracy", "top-1 accuracy", False), ("top5", "top-5 accuracy", False),
              ("e_norm", "norm of e (solid), m (dashed)", False),
              ("grad_norm", "gradient norm before clipping", True)]
    for ax, (name, label, log) in zip(axes.flat, panels):
        values = curves[name]
        steps = np.arange(len(values))
        ax.plot(steps, values, color="0.6", lw=0.6, alpha=0.6)
        if np.isfinite(values).any():
            ax.plot(steps, _median(values), color=color, lw=2, label=f"{model}: median")
        if name == "e_norm":
            m = curves["m_norm"]
            if np.isfinite(m).any():
                ax.plot(steps, m, color="0.6", lw=0.6, ls="--", alpha=0.6)
                ax.plot(steps, _median(m), color=color, lw=2, ls="--")
            ax.axhline(embedding_norm, color="k", ls=":", lw=1,
                       label=f"mean token-embedding norm ({embedding_norm:.2f})")
        if name == "grad_norm" and max_grad_norm is not None:
            ax.axhline(max_grad_norm, color="k", ls=":", lw=1, label=f"clip at {max_grad_norm}")
        if name in ("accuracy", "top5"):
            ax.set_ylim(-0.02, 1.02)
        if log and np.nanmin(values, initial=np.inf) > 0:
            ax.set_yscale("log")
        ax.set_title(label)
        ax.set_xlabel(xlabel)
        ax.legend(loc="best", fontsize=8)
        ax.grid(alpha=0.3)
    ax = axes.flat[5]
    ax.plot(np.arange(len(lr)), lr, color=color, lw=2)
    ax.set_title("learning rate (one optimisation)")
    ax.set_xlabel(xlabel)
    ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    io.save_figure(path, fig)
    plt.close(fig)


def _median(values: np.ndarray) -> np.ndarray:
    out = np.full(len(values), np.nan)
    rows = np.isfinite(values).any(1)
    out[rows] = np.nanmedian(values[rows], axis=1)
    return out


def _shown(token: str) -> str:
    """A token's text with its whitespace made visible."""
    shown = token.replace(" ", "·").replace("\n", "↵").replace("\t", "→")
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in shown) or "∅"


def _layout(pieces: list[str]) -> list[tuple[int, float, float]]:
    """(row, x, width) per token: tokens flow left to right, a new row after a newline
    or when the row is full, like the text itself."""
    out, row, x = [], 0, 0.0
    for piece in pieces:
        width = len(_shown(piece)) + 0.4
        if x > 0 and x + width > MAP_WIDTH:
            row, x = row + 1, 0.0
        out.append((row, x, width))
        x += width
        if "\n" in piece:
            row, x = row + 1, 0.0
    return out


def error_map(records: list[dict], tokenizer, title: str, path: Path) -> None:
    """Each text's target tokens in rows, filled by the probability the model gives the
    target token, outlined in red where the model's top token is a different one."""
    plt = _pyplot()
    from matplotlib.patches import Rectangle

    cmap = plt.get_cmap("RdYlGn")
    blocks = []
    for rec in records:
        pieces = [tokenizer.decode([t]) for t in rec["target_ids"]]
        blocks.append((rec, pieces, _layout(pieces)))
    heights = [2 + (lay[-1][0] + 1 if lay else 1) for _, _, lay in blocks]
    total = sum(heights)
    fig, ax = plt.subplots(figsize=(11, 1.2 + 0.32 * total))
    top = 0
    for (rec, pieces, lay), height in zip(blocks, heights):
        error = "no error" if rec["first_error"] is None else f"first error at {rec['first_error']}"
        part = (f"its first {rec['length']} of {rec['full_length']} tokens, "
                if rec["length"] < rec["full_length"] else "")
        kind = " (random-token control)" if rec.get("kind") == "random" else ""
        ax.text(0, top + 0.6, f"text {rec['index']}{kind}: {rec.get('note', '')}{part}"
                f"{rec['correct']}/{rec['length']} "
                f"right ({rec['status']}), {error}", fontsize=9, weight="bold", va="center")
        for piece, (row, x, width), prob, pred, target in zip(
                pieces, lay, rec["target_prob"], rec["predicted_ids"], rec["target_ids"]):
            y = top + 1.5 + row
            wrong = pred != target
            ax.add_patch(Rectangle((x, y - 0.45), width - 0.15, 0.9, facecolor=cmap(prob),
                                   edgecolor="red" if wrong else "none", lw=1.6 if wrong else 0))
            ax.text(x + (width - 0.15) / 2, y, _shown(piece), ha="center", va="center",
                    fontsize=8, family="monospace")
        top += height
    ax.set_xlim(-0.5, MAP_WIDTH + 0.5)
    ax.set_ylim(total, 0)
    ax.axis("off")
    mappable = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(0, 1))
    fig.colorbar(mappable, ax=ax, fraction=0.02, pad=0.01, label="P(target token)")
    ax.set_title(f"{title}\nfill: probability of the target token; red outline: the model's "
                 "top token is a different one; · space, ↵ newline", fontsize=10)
    fig.tight_layout()
    io.save_figure(path, fig)
    plt.close(fig)


def capacity_plot(records: list[dict], model: str, threshold: float, path: Path) -> None:
    """Clean accuracy against prefix length for every attempt of the capacity search (grid
    and bisection), one line per text and restart; random-token controls in grey."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 5))
    color = color_for(model)
    longest = 1
    for rec in records:
        tint = "0.55" if rec["kind"] == "random" else color
        for run in rec["restarts"]:
            tried = sorted((lv["length"], lv["accuracy"]) for lv in run["levels"])
            ax.plot(*zip(*tried), marker="o", ms=3, lw=0.8, color=tint, alpha=0.5)
            longest = max(longest, tried[-1][0])
    ax.plot([], [], color=color, label="target texts")
    if any(rec["kind"] == "random" for rec in records):
        ax.plot([], [], color="0.55", label="random-token controls")
    ax.axhline(threshold, color="k", ls=":", lw=1, label=f"reconstructed (accuracy >= {threshold})")
    ax.set_xscale("log", base=2)
    ax.set_xlim(right=longest * 1.15)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("prefix length (tokens)")
    ax.set_ylabel("accuracy of the clean pass")
    ax.set_title(f"capacity search, {model}: one line per text and restart (fresh start per length)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left")
    fig.tight_layout()
    io.save_figure(path, fig)
    plt.close(fig)


def capacity_vs_params(summaries: dict, path: Path) -> None:
    """Capacity against parameter count, one column per model: every (text, restart) as a
    faint dot (the spread across restarts), each text's best restart as a point, the median
    across texts of the best and of the per-text restart medians joined; random-token
    controls beside them."""
    from matplotlib.transforms import blended_transform_factory

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 5))
    models = sorted(summaries.items(), key=lambda kv: kv[1]["model"]["parameters"])
    for group, marker, tint, label in (("target", "o", "C0", "target texts"),
                                       ("random", "s", "0.5", "random-token controls")):
        xs, best, typical = [], [], []
        for _, summary in models:
            part = summary if group == "target" else summary.get("random_control")
            if not part or "capacity" not in part:
                continue
            x = summary["model"]["parameters"]
            capacity = part["capacity"]
            caps = capacity["per_text"]
            jitter = np.linspace(0.97, 1.03, len(caps)) if len(caps) > 1 else np.ones(1)
            for shift, tries in zip(jitter, capacity.get("per_text_and_restart", [])):
                ax.scatter(np.full(len(tries), x * shift), tries, marker=marker, color=tint,
                           alpha=0.15, s=10)
            ax.scatter(x * jitter, caps, marker=marker, color=tint, alpha=0.5, s=18)
            xs.append(x)
            best.append(np.median(caps))
            typical.append(np.median(capacity["median_over_restarts"]))
        if xs:
            ax.plot(xs, best, marker=marker, color=tint, lw=2, ms=8,
                    label=f"{label}: median over texts, best restart")
            ax.plot(xs, typical, marker=marker, color=tint, lw=1, ls="--", ms=5, mfc="white",
                    label=f"{label}: median over texts of the restart median")
    at_axis = blended_transform_factory(ax.transData, ax.transAxes)
    for name, summary in models:
        ax.annotate(name.rstrip("/").split("/")[-1], (summary["model"]["parameters"], 0.02),
                    xycoords=at_axis, ha="center", fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("parameters")
    ax.set_ylabel("capacity: longest prefix reconstructed (tokens)")
    ax.set_title("04-proto capacity against model size (faint: every restart)")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left")
    fig.tight_layout()
    io.save_figure(path, fig)
    plt.close(fig)
