"""A response as HTML, every token coloured by a value (entropy, surprisal, rank) on a stepped scale.

A linear scale has `shades` equal steps from 0; the darkest starts at `top` (a
quantile of the run) and takes everything above. A bin scale (ranks, GLTR
style) has fixed integer edges. The first step is left unhighlighted (the theme's own text on the
theme's background), so the many near-certain tokens of a response stay quiet
and the uncertain ones stand out. Every other step is an opaque colour with
its own text colour, black or white, whichever contrasts more: with a
highlighted background the text never depends on the theme, and the WCAG
contrast of every step is at least 4.5:1 in light and dark themes alike.

Token text is HTML-escaped; spaces and newlines are kept (`white-space:
pre-wrap`), and a newline token also shows a faint ↵ (drawn by CSS, so it is
not part of copied text) so that it can be seen and clicked. The response's
outcome fork (forks.py), if it has one, is marked by a class the component draws.
"""

from __future__ import annotations

import html
from dataclasses import dataclass

import numpy as np

from rl_onoff.viewer.text import fixed

# ColorBrewer's 9-class YlOrRd (matplotlib's "YlOrRd" interpolates the same anchors), light
# yellow to dark red: reads as a highlighter in both themes. Written out, not taken from
# matplotlib, because importing matplotlib would cost the page's first render a second.
YLORRD = ("#ffffcc", "#ffeda0", "#fed976", "#feb24c", "#fd8d3c", "#fc4e2a", "#e31a1c", "#bd0026",
          "#800026")
COLORMAP_RANGE = (0.12, 1.0)  # skip the near-white start (no contrast with a light page)
BLACK, WHITE = "#000000", "#ffffff"


def colormap(x: np.ndarray) -> list[str]:
    """YlOrRd at positions `x` in [0, 1], interpolated linearly in RGB between the anchors."""
    anchors = np.array([[int(c[i:i + 2], 16) for i in (1, 3, 5)] for c in YLORRD], dtype=float)
    grid = np.linspace(0, 1, len(YLORRD))
    rgb = np.stack([np.interp(x, grid, anchors[:, channel]) for channel in range(3)], axis=-1)
    return ["#{:02x}{:02x}{:02x}".format(*row) for row in np.rint(rgb).astype(int)]


def luminance(colour: str) -> float:
    """WCAG relative luminance of `#rrggbb`."""
    channels = np.array([int(colour[i:i + 2], 16) for i in (1, 3, 5)]) / 255
    linear = np.where(channels <= 0.04045, channels / 12.92, ((channels + 0.055) / 1.055) ** 2.4)
    return float(linear @ np.array([0.2126, 0.7152, 0.0722]))


def contrast(a: str, b: str) -> float:
    """WCAG contrast ratio of two colours (1 to 21; 4.5 is the minimum for body text)."""
    high, low = sorted((luminance(a), luminance(b)), reverse=True)
    return (high + 0.05) / (low + 0.05)


@dataclass(frozen=True)
class Scale:
    """Steps with lower edges `edges` (the first step also takes everything below), in `unit`;
    `colours[0]` is None (unhighlighted), `labels` are the legend's text for each step."""
    edges: tuple
    unit: str
    colours: tuple  # per step: None or (background, text)
    labels: tuple

    @classmethod
    def linear(cls, top: float, shades: int, unit: str) -> "Scale":
        """`shades` equal steps from 0; the darkest starts at `top` (a quantile of the run),
        so the legend's top swatch and the caption name the same number."""
        top = max(float(top), 1e-9)
        edges = np.linspace(0.0, top, shades)
        labels = [f"< {fixed(edges[1], 2)}",
                  *(f"{fixed(lower, 2)}–{fixed(upper, 2)}" for lower, upper in
                    zip(edges[1:-1], edges[2:])), f"≥ {fixed(top, 2)}"]
        return cls(tuple(edges), unit, _colours(shades), tuple(labels))

    @classmethod
    def bins(cls, edges: tuple, unit: str) -> "Scale":
        """Integer bins (GLTR's ranks): a step per [edges[i], edges[i+1])."""
        labels = [str(lower) if upper == lower + 1 else f"{lower}–{upper - 1}"
                  for lower, upper in zip(edges, edges[1:])] + [f"≥ {edges[-1]}"]
        return cls(tuple(float(e) for e in edges), unit, _colours(len(edges)), tuple(labels))

    @property
    def top(self) -> float:
        """Where the darkest step starts."""
        return self.edges[-1]

    def step(self, values: np.ndarray) -> np.ndarray:
        """The step of each value (below the first edge: 0; NaN: the darkest)."""
        values = np.nan_to_num(np.asarray(values, dtype=np.float64), nan=np.inf)
        return np.maximum(np.searchsorted(self.edges, values, side="right") - 1, 0)


def _colours(steps: int) -> tuple:
    """None (unhighlighted), then `steps - 1` backgrounds with their more contrasting text."""
    backgrounds = colormap(np.linspace(*COLORMAP_RANGE, steps - 1))
    return (None, *((bg, max((BLACK, WHITE), key=lambda text, bg=bg: contrast(bg, text)))
                    for bg in backgrounds))


def style(scale: Scale) -> str:
    """CSS classes s0..sN for the steps of `scale`."""
    rules = [f".s{i}{{background:{c[0]};color:{c[1]}}}"
             for i, c in enumerate(scale.colours) if c is not None]
    return "<style>" + "".join(rules) + "</style>"


def legend_html(scale: Scale, label: str) -> str:
    """One swatch per step, labelled with the values it covers."""
    cells = [f'<span class="sw s{i}">{html.escape(text)}</span>'
             for i, text in enumerate(scale.labels)]
    return (f'<div class="rlo-legend"><span class="rlo-legend-label">{html.escape(label)} '
            f'({html.escape(scale.unit)}):</span>{"".join(cells)}</div>')


def tokens_html(strings: list[str], values: np.ndarray, scale: Scale, selected: int | None,
                tooltips: list[str], fork: int | None = None) -> str:
    """The response: one span per token with its step class, position and tooltip."""
    steps = scale.step(values)
    spans = []
    for i, (text, step, tip) in enumerate(zip(strings, steps, tooltips)):
        classes = f"t s{step}" + (" nl" if text.endswith("\n") else "") + \
                  (" fork" if i == fork else "") + (" sel" if i == selected else "")
        spans.append(f'<span class="{classes}" data-i="{i}" title="{html.escape(tip)}">'
                     f"{html.escape(text)}</span>")
    return f'<div class="rlo-tokens">{"".join(spans)}</div>'


def response_html(strings: list[str], values: np.ndarray, scale: Scale, selected: int | None,
                  tooltips: list[str], label: str, fork: int | None = None) -> str:
    """Legend and tokens, with the scale's colours, ready for the token component."""
    return (style(scale) + legend_html(scale, label)
            + tokens_html(strings, values, scale, selected, tooltips, fork))
