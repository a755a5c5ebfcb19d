"""How the viewer writes numbers and the text it read from files.

One rounding rule, the browser's: a number's exact binary value rounded half away
from zero (JavaScript's toFixed, which Streamlit's column formats and Vega's
".3f" use), so 5/8 reads 0.63 in a table, a label and a chart alike; Python's
own "%.2f" rounds that tie to 0.62.

Text from output files (questions, answers, model and dataset names, paths)
goes into Streamlit elements that render Markdown: `plain` escapes it, so that
`*`, `_`, `$`, `:red[...]` or `![](http://...)` show as typed and fetch nothing.
"""

from __future__ import annotations

import re
from decimal import ROUND_HALF_UP, Decimal

# Every ASCII punctuation character may be backslash-escaped in CommonMark (and in
# Streamlit's math `$` and directive `:` syntax): escaping them all leaves no markup.
_PUNCTUATION = re.compile(r"([!-/:-@\[-`{-~])")


def fixed(value: float, digits: int) -> str:
    """`value` with `digits` decimals, ties away from zero on its exact binary value."""
    if value != value or value in (float("inf"), float("-inf")):
        return str(value)
    exact = Decimal(float(value)).quantize(Decimal(1).scaleb(-digits), rounding=ROUND_HALF_UP)
    return f"{abs(exact) if exact.is_zero() else exact:.{digits}f}"  # no "-0.00"


def plain(text) -> str:
    """`text` as Markdown that renders exactly as `text` (line breaks kept)."""
    lines = _PUNCTUATION.sub(r"\\\1", str(text)).split("\n")
    return "  \n".join(lines)
