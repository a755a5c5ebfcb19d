"""Starting the viewer's server, and telling who can reach it.

`python exp/02-visualize.py` replaces itself with `streamlit run` on the same
script, listening where `02_visualize.address` and `.port` say (127.0.0.1 by
default: only this machine; the way in from a laptop is SSH port forwarding).
"""

from __future__ import annotations

import ipaddress
import os
import sys

from rl_onoff.config import VisualizeConfig


def is_loopback(address: str | None) -> bool:
    """Whether a server bound to `address` is reachable from this machine only. Streamlit's
    default (no address) listens on every interface."""
    if not address:
        return False
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:  # a host name: it may resolve to any interface
        return False


def exposure(address: str | None, port: int) -> str | None:
    """A warning when the server is reachable from other machines, else None."""
    if is_loopback(address):
        return None
    where = f"{address}:{port}" if address else f"every interface, port {port}"
    return (f"The viewer listens on {where}: anyone who can reach this host on that port sees "
            "these outputs (no login). Bind to 127.0.0.1 and use SSH port forwarding instead.")


def command(script: str, address: str, port: int, argv: list[str]) -> list[str]:
    """The `streamlit run` command line for `script`, our own arguments after `--`, with the
    settings of .streamlit/config.toml that matter wherever it is started: no file watcher
    (a viewer does not reload on edits), no browser opened on the server, no usage stats."""
    return [sys.executable, "-m", "streamlit", "run", script,
            "--server.address", address, "--server.port", str(port),
            "--server.fileWatcherType", "none", "--server.headless", "true",
            "--browser.gatherUsageStats", "false", "--", *argv]


def launch(script: str, cfg: VisualizeConfig, argv: list[str]) -> None:
    """Say how to open the app, then become the Streamlit server (Ctrl-C stops it)."""
    warning = exposure(cfg.address, cfg.port)
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"02-visualize: serving {cfg.input} on http://{cfg.address}:{cfg.port}\n"
          f"  from another machine: ssh -L {cfg.port}:localhost:{cfg.port} THIS_HOST, then open "
          f"http://localhost:{cfg.port}", flush=True)
    os.execv(sys.executable, command(script, cfg.address, cfg.port, argv))
