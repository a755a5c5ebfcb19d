"""02-visualize: a Streamlit app over 01's output (no model or tokenizer needed).

    streamlit run exp/02-visualize.py [-- --config FILE --set 02_visualize.KEY=VALUE]
    python exp/02-visualize.py [--config FILE] [--set ...]   # the same, on the YAML's address/port

data       open and check 01's output; prompt and sample tables, filters, scales (no Streamlit)
tokens     a response as HTML, each token coloured on a stepped, legible scale
component  the clickable token view (a Streamlit v2 component)
charts     the Altair charts: top-k alternatives, entropy trace, run summaries
app        the page
server     starting the server and warning when it is reachable from other machines
"""

from __future__ import annotations


def main(script: str, description: str, argv: list[str]) -> None:
    """What exp/02-visualize.py runs: the page under `streamlit run`; under plain python,
    a Streamlit server for `script` on the YAML's address and port."""
    from streamlit import runtime

    if runtime.exists():
        from rl_onoff.viewer.app import render

        render(description, argv)
        return
    from rl_onoff.cli import main as cli_main
    from rl_onoff.viewer.server import launch

    cli_main(description, lambda config: launch(script, config["02_visualize"], argv), argv,
             section="02_visualize")
