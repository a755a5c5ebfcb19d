"""The viewer in a real browser: a server on a free local port, headless Chromium via playwright.

Used by the browser test, the benchmark and to take the README's screenshot:

    python tools/browser.py docs/viewer_forks.png [--theme dark] [--prompt 28 --sample 0
        --token 9] [-- --config X]

Needs Chromium (Debian: `apt-get install chromium`) and `pip install playwright`;
playwright's own browser download is not used.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from rl_onoff.viewer.server import command

SCRIPT = Path(__file__).resolve().parents[1] / "exp" / "02-visualize.py"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
TOKENS = ".rlo-tokens .t"  # a rendered token of the response


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def serve(argv: list[str], script: Path = SCRIPT,
          timeout: float = 90) -> Iterator[tuple[str, subprocess.Popen]]:
    """`streamlit run SCRIPT -- ARGV` on a free port of 127.0.0.1, once it answers its health
    check: (url, process). The server is stopped when the block ends."""
    port = free_port()
    process = subprocess.Popen(command(str(script), "127.0.0.1", port, argv),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _wait_healthy(port, process, timeout)
        yield f"http://127.0.0.1:{port}", process
    finally:
        process.terminate()
        process.wait(timeout=30)


def _wait_healthy(port: int, process: subprocess.Popen, timeout: float) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the viewer's server exited:\n{process.stdout.read()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health",
                                        timeout=2) as answer:
                if answer.read().strip() == b"ok":
                    return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"the viewer did not answer on port {port} within {timeout:.0f} s")


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@contextmanager
def chromium() -> Iterator:
    """A headless Chromium (playwright Browser) from the system's chromium."""
    from playwright.sync_api import sync_playwright

    path = chromium_path()
    if path is None:
        raise FileNotFoundError("no chromium on PATH (Debian: apt-get install chromium)")
    with sync_playwright() as play:
        browser = play.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def choose(page, label: str, option_prefix: str) -> None:
    """Pick the option starting with `option_prefix` in the selectbox labelled `label`."""
    page.locator('[data-testid="stSelectbox"]').filter(has_text=label).first.click()
    page.keyboard.type(option_prefix)  # the list shows only a window of its options
    page.get_by_role("option").filter(has_text=option_prefix).first.click()
    page.evaluate("document.activeElement.blur()")  # no focus ring in the picture


def screenshot(out: str, theme: str, prompt: int | None, sample: int | None, token: int | None,
               size: tuple[int, int], argv: list[str]) -> None:
    """Open the viewer as configured, optionally pick a prompt and a response and click a
    token, save a PNG."""
    with serve(argv) as (url, _), chromium() as browser:
        page = browser.new_page(viewport={"width": size[0], "height": size[1]},
                                color_scheme=theme)
        page.goto(url)
        page.wait_for_selector(TOKENS, timeout=60_000)
        if prompt is not None:
            choose(page, "prompt", f"#{prompt} ·")
            page.get_by_text(f"Question {prompt} ").wait_for(timeout=30_000)
        if sample is not None:
            choose(page, "response", f"#{sample} ")
        if token is not None:
            page.locator(TOKENS).nth(token).click()
            page.get_by_text(f"Token {token}:").wait_for(timeout=30_000)
        page.wait_for_timeout(2000)  # charts draw after the tokens
        page.screenshot(path=out)


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """Our options, and the viewer's `--config`/`--set` after `--`. Split by hand: argparse
    gives a `*` positional its (empty) share together with `out`, and would then reject
    everything after `--` as unrecognised."""
    split = argv.index("--") if "--" in argv else len(argv)
    own, viewer_args = argv[:split], argv[split + 1:]
    p = argparse.ArgumentParser(description="Screenshot the viewer in headless Chromium.",
                                epilog="after --: the viewer's --config/--set")
    p.add_argument("out", help="PNG path")
    p.add_argument("--theme", choices=["light", "dark"], default="light")
    p.add_argument("--prompt", type=int, help="show this question (its index)")
    p.add_argument("--sample", type=int, help="show this response of it")
    p.add_argument("--token", type=int, help="click the token at this position")
    p.add_argument("--size", type=int, nargs=2, default=[1500, 1300], metavar=("W", "H"))
    return p.parse_args(own), viewer_args


def main() -> None:
    args, viewer_args = parse_args(sys.argv[1:])
    screenshot(args.out, args.theme, args.prompt, args.sample, args.token, tuple(args.size),
               viewer_args)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
