"""The clickable response: tokens.response_html in the page, a click reports the token's position.

A Streamlit (v2) component with no iframe: the HTML is set as the content of
the component's root; a click on a token marks it at once and sends its
position to Python as the trigger value `clicked`, which reruns the script.
However a token was selected (click, position box, trace, a fork, a permalink),
the box scrolls to it when it is out of sight: a response of thousands of tokens
opens at the token inspected, not at its top.
"""

from __future__ import annotations

from typing import Callable

import streamlit as st

NAME = "rl_onoff_tokens"

CSS = """
.rlo-legend { display: flex; flex-wrap: wrap; align-items: center; gap: 2px;
  margin: 0 0 0.6rem 0; font-size: 0.8rem; }
.rlo-legend-label { margin-right: 0.5rem; }
.rlo-legend .sw { padding: 0.1rem 0.45rem; border-radius: 3px;
  font-family: ui-monospace, "Source Code Pro", monospace; }
.rlo-legend .s0 { border: 1px dashed currentColor; opacity: 0.8; }
.rlo-tokens { white-space: pre-wrap; word-break: break-word; line-height: 1.95;
  font-family: ui-monospace, "Source Code Pro", Menlo, monospace; font-size: 0.92rem;
  padding: 0.75rem; border-radius: 6px; max-height: min(32rem, 55vh); overflow-y: auto;
  border: 1px solid rgba(128, 128, 128, 0.35); }
.rlo-tokens .t { cursor: pointer; border-radius: 3px; padding: 0.12rem 0;
  box-decoration-break: clone; -webkit-box-decoration-break: clone; }
.rlo-tokens .t:hover { outline: 1px solid rgba(128, 128, 128, 0.9); }
.rlo-tokens .nl::before { content: "\\21B5"; opacity: 0.45; }
.rlo-tokens .sel { outline: 2px solid #0072b2; outline-offset: 2px; }  /* blue: off the scale */
.rlo-tokens .fork { box-shadow: inset 0 -3px 0 #009e73; }  /* green underline: the outcome fork */
"""

JS = """
export default function (component) {
  const { data, parentElement, setTriggerValue } = component;
  let root = parentElement.querySelector(".rlo-root");
  if (!root) {
    root = document.createElement("div");
    root.className = "rlo-root";
    parentElement.appendChild(root);
  }
  const scroll = root.querySelector(".rlo-tokens")?.scrollTop ?? 0;
  root.innerHTML = data;
  const tokens = root.querySelector(".rlo-tokens");
  const selected = tokens?.querySelector(".sel");
  if (tokens) tokens.scrollTop = scroll;
  if (selected) {  // out of sight: centre it in the box
    const box = tokens.getBoundingClientRect(), at = selected.getBoundingClientRect();
    if (at.top < box.top || at.bottom > box.bottom) {
      tokens.scrollTop += at.top - box.top - (box.height - at.height) / 2;
    }
  }
  const onClick = (event) => {
    const token = event.target.closest("[data-i]");
    if (!token) return;
    root.querySelectorAll(".sel").forEach((el) => el.classList.remove("sel"));
    token.classList.add("sel");
    setTriggerValue("clicked", Number(token.dataset.i));
  };
  root.addEventListener("click", onClick);
  return () => root.removeEventListener("click", onClick);
}
"""

_mount = st.components.v2.component(NAME, css=CSS, js=JS)


def clickable_tokens(html: str, key: str, on_click: Callable[[int], None]) -> None:
    """Show `html` (legend and tokens); a click on a token calls `on_click(position)` before
    the rerun, so widgets drawn after it already show the new selection."""
    def clicked() -> None:
        position = st.session_state[key].get("clicked")
        if position is not None:
            on_click(int(position))

    _mount(data=html, key=key, on_clicked_change=clicked)
