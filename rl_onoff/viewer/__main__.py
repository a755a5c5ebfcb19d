"""`python -m rl_onoff.viewer run SCRIPT [streamlit options] -- [ARGS]`: `streamlit run`, with
the page's heavy libraries imported before the server starts.

A fresh server runs the page's script only when the first browser arrives; that first
run used to import pandas and pyarrow (about a second on 2 cores) while the researcher
waited. Importing them here moves that second to start-up. The viewer's own modules are
not imported here: the token component registers itself with the running server.
"""

import importlib
import sys

PRELOAD = ("pandas", "pyarrow", "rl_onoff.viewer.data", "rl_onoff.viewer.forks",
           "rl_onoff.viewer.charts", "rl_onoff.viewer.tokens")

if __name__ == "__main__":
    for module in PRELOAD:
        importlib.import_module(module)
    from streamlit.web import cli

    sys.argv = ["streamlit", *sys.argv[1:]]
    sys.exit(cli.main())
