"""The viewer's charts, as Vega-Lite specs with their data (drawn by st.vega_lite_chart in the
page's theme).

Plain specs rather than Altair objects: Altair validates every chart against the
Vega-Lite schema each time Streamlit draws it, which cost the page more than half a
second per rerun. Colours come from rl_onoff.colors.PALETTE (colour-blind safe) and
read on light and dark backgrounds alike: the sampled token and the selected
position in orange, other alternatives in grey, correct and incorrect responses in
green and vermillion.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from rl_onoff.colors import PALETTE
from rl_onoff.distributions.summary import token_label

HIGHLIGHT, MUTED = PALETTE[1], "#8c8c8c"
CORRECT, INCORRECT = PALETTE[2], PALETTE[3]
FULL, SAMPLED = "full distribution (T=1)", "distribution 00 sampled from"
PICK = "pick"  # the name of the trace chart's click selection
HEIGHT = 400   # of a run chart, title, axes and legend included
LEGEND = {"title": None, "orient": "top", "direction": "vertical", "labelLimit": 500}

Chart = tuple[pd.DataFrame, dict]  # the data and the spec st.vega_lite_chart draws


def top_k_chart(alternatives: pd.DataFrame) -> Chart:
    """Horizontal bars of the alternatives' probabilities, most likely on top, the sampled
    token in orange. Rank, token and probability are in the axis label (themed text, so it
    reads on light and dark pages)."""
    data = alternatives.assign(
        label=[f"{r}: {token_label(t)}  {p:.3g}" for r, t, p in
               zip(alternatives["rank"], alternatives["token"], alternatives["probability"])],
        kind=np.where(alternatives["sampled"], "sampled token", "alternative"))
    return data, {
        "mark": {"type": "bar"}, "height": {"step": 24},
        "encoding": {
            "y": {"field": "label", "type": "nominal", "sort": data["label"].tolist(),
                  "title": None,
                  "axis": {"labelLimit": 300, "labelFontSize": 12, "labelOverlap": False}},
            "x": {"field": "probability", "type": "quantitative", "title": "probability (T=1)",
                  "scale": {"domain": [0, 1]}},
            "color": {"field": "kind", "type": "nominal",
                      "scale": {"domain": ["sampled token", "alternative"],
                                "range": [HIGHLIGHT, MUTED]},
                      "legend": {"title": None, "orient": "bottom"}},
            "tooltip": [{"field": "rank"}, {"field": "token"},
                        {"field": "probability", "format": ".4g"}, {"field": "id"}]}}


def trace_chart(values: np.ndarray, selected: int, title: str) -> Chart:
    """The view's value at each position, the selected position marked; a click selects the
    nearest position (selection `pick`, on the points: Vega-Lite's `nearest` needs them)."""
    data = pd.DataFrame({"position": np.arange(len(values)), "value": values})
    encoding = {"x": {"field": "position", "type": "quantitative",
                      "title": "position in the response (tokens)"},
                "y": {"field": "value", "type": "quantitative", "title": title}}
    return data, {"height": 220, "layer": [
        {"mark": {"type": "line"}, "encoding": encoding},
        {"mark": {"type": "point", "filled": True, "size": 18},
         "params": [{"name": PICK, "select": {"type": "point", "fields": ["position"],
                                              "nearest": True, "clear": False}}],
         "encoding": {**encoding, "tooltip": [{"field": "position"},
                                              {"field": "value", "format": ".4f"}]}},
        {"data": {"values": [{"position": selected}]},
         "mark": {"type": "rule", "color": HIGHLIGHT, "strokeWidth": 2},
         "encoding": {"x": {"field": "position", "type": "quantitative"}}}]}


def histogram_chart(summary: dict, both: bool = True) -> Chart:
    """Tokens per entropy bin, full and (if `both`: they differ) sampled distributions, counts
    on a log-like axis."""
    hist = summary["histogram"]
    series = [(FULL, "entropy"), (SAMPLED, "sampled_entropy")][:2 if both else 1]
    data = pd.concat([_steps(hist["edges"], hist[key], name) for name, key in series])
    return data, _step_lines(data, "tokens", 1.0,
                             f"Per-token entropy ({summary['num_tokens']:,} tokens)",
                             [name for name, _ in series])


def correct_chart(summary: dict) -> Chart | None:
    """Share of tokens per entropy bin in correct and in incorrect responses (None: no tokens)."""
    groups = summary["correct_vs_incorrect"]
    parts, colours = [], []
    for key, colour in (("correct", CORRECT), ("incorrect", INCORRECT)):
        group = groups[key]
        if group["num_tokens"]:
            share = np.asarray(group["histogram"]) / group["num_tokens"]
            parts.append(_steps(groups["edges"], share,
                                f"{key}: {group['num_samples']} responses, mean "
                                f"{group['mean_entropy']:.3f} nats"))
            colours.append(colour)
    if not parts:
        return None
    data = pd.concat(parts)
    smallest = 1 / max(groups[k]["num_tokens"] for k in ("correct", "incorrect"))
    return data, _step_lines(data, "share of tokens", smallest,
                             "Per-token entropy, correct vs incorrect responses",
                             [p["series"].iloc[0] for p in parts], colours)


def position_chart(summary: dict, both: bool = True) -> Chart:
    """Mean entropy at each response position (left axis), over the number of responses that
    reach it (grey, right axis); the sampled distribution's too if `both`."""
    pos = summary["by_position"]
    x = np.arange(len(pos["count"]))
    data = pd.concat([pd.DataFrame({"position": x, "series": series, "entropy": pos[key],
                                    "responses": pos["count"]})
                      for series, key in ((FULL, "mean_entropy"),
                                          (SAMPLED, "mean_sampled_entropy"))[:2 if both else 1]])
    position = {"field": "position", "type": "quantitative",
                "title": "position in the response (tokens)"}
    return data, {"title": "Entropy by position", "height": HEIGHT,
                  "resolve": {"scale": {"y": "independent"}}, "layer": [
        {"transform": [{"filter": {"field": "series", "equal": FULL}}],
         "mark": {"type": "area", "opacity": 0.2, "color": MUTED, "interpolate": "step"},
         "encoding": {"x": position,
                      "y": {"field": "responses", "type": "quantitative",
                            "title": "responses this long", "axis": {"orient": "right"}}}},
        {"mark": {"type": "line"},
         "encoding": {"x": position,
                      "y": {"field": "entropy", "type": "quantitative",
                            "title": "mean entropy (nats)", "axis": {"orient": "left"}},
                      "color": {"field": "series", "type": "nominal",
                                "scale": {"domain": [FULL, SAMPLED][:2 if both else 1]},
                                "legend": LEGEND},
                      "strokeDash": {"field": "series", "type": "nominal", "legend": None},
                      "tooltip": [{"field": "series"}, {"field": "position"},
                                  {"field": "entropy", "format": ".4f"}]}}]}


def _steps(edges, counts, series: str) -> pd.DataFrame:
    """A histogram as points of a step line: each bin's left edge, then the last right edge."""
    counts = np.asarray(counts, dtype=float)
    return pd.DataFrame({"entropy": np.asarray(edges, dtype=float),
                         "value": np.append(counts, counts[-1]), "series": series})


def _step_lines(data: pd.DataFrame, ylabel: str, smallest: float, title: str,
                series: list[str], colours: list[str] | None = None) -> dict:
    """Step lines on a symlog axis (zero stays drawable) with ticks at powers of ten from
    `smallest`, the least non-zero value the data can hold, to the largest value."""
    top = max(float(data["value"].max()), smallest)
    ticks = [0.0] + [10.0 ** k for k in range(int(np.floor(np.log10(smallest))),
                                              int(np.floor(np.log10(top))) + 1)]
    colour = {"field": "series", "type": "nominal", "legend": LEGEND,
              "scale": {"domain": series, **({"range": colours} if colours else {})}}
    return {"title": title, "height": HEIGHT,
            "mark": {"type": "line", "interpolate": "step-after"},
            "encoding": {
                "x": {"field": "entropy", "type": "quantitative", "title": "entropy (nats)"},
                "y": {"field": "value", "type": "quantitative", "title": ylabel,
                      "scale": {"type": "symlog", "constant": smallest},
                      "axis": {"values": ticks, "format": ",~r"}},
                "color": colour,
                "strokeDash": {"field": "series", "type": "nominal", "legend": None},
                "tooltip": [{"field": "series"}, {"field": "entropy", "format": ".3f"},
                            {"field": "value", "format": ".4g"}]}}
