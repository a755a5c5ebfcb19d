"""Starting the viewer's server, and telling who can reach it.

`python exp/02-visualize.py` replaces itself with `streamlit run` on the same
script, listening where `02_visualize.address` and `.port` say (127.0.0.1 by
default: only this machine; the way in from a laptop is SSH port forwarding).

The server accepts a page's connection only under the host names of ALLOWED_HOSTS
(Streamlit's server.allowedHosts): a hostile web page whose name resolves to
127.0.0.1 (DNS rebinding) cannot read the app through a researcher's tunnel.
Errors reach the browser as their type only; the details go to the console.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import sys

ALLOWED_HOSTS = ("localhost", "127.0.0.1", "::1")  # how a tunnel's far end reaches the app


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


def allowed_hosts(address: str) -> list[str]:
    """The host names the server answers to: this machine's loopback names, and where it is
    bound elsewhere on purpose, that address and this host's names."""
    if is_loopback(address):
        return list(ALLOWED_HOSTS)
    wildcard = address in ("0.0.0.0", "::")
    return list(dict.fromkeys([*ALLOWED_HOSTS, *([] if wildcard else [address]),
                               socket.gethostname(), socket.getfqdn()]))


def command(script: str, address: str, port: int, argv: list[str]) -> list[str]:
    """The `streamlit run` command line for `script` (through rl_onoff.viewer's launcher,
    which imports the page's libraries first), our own arguments after `--`, with the
    settings of .streamlit/config.toml that matter wherever it is started: the allowed host
    names, errors without details, no file watcher (a viewer does not reload on edits), no
    browser opened on the server, no usage stats."""
    hosts = [flag for host in allowed_hosts(address) for flag in ("--server.allowedHosts", host)]
    return [sys.executable, "-m", "rl_onoff.viewer", "run", script,
            "--server.address", address, "--server.port", str(port), *hosts,
            "--client.showErrorDetails", "type",
            "--server.fileWatcherType", "none", "--server.headless", "true",
            "--browser.gatherUsageStats", "false", "--", *argv]


def launch(script: str, cfg, argv: list[str]) -> None:
    """Say how to open the app, then become the Streamlit server (Ctrl-C stops it)."""
    warning = exposure(cfg.address, cfg.port)
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"02-visualize: serving {cfg.input} on http://{cfg.address}:{cfg.port}\n"
          f"  from another machine: ssh -L {cfg.port}:localhost:{cfg.port} THIS_HOST, then open "
          f"http://localhost:{cfg.port}", flush=True)
    os.execv(sys.executable, command(script, cfg.address, cfg.port, argv))
