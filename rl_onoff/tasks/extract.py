"""Answer extraction: the final answer a response states, in its answer format.

`boxed` answers are the content of the last non-empty `\\boxed{...}` (or
`\\fbox{...}`); `structured` answers are the content of the last
`<answer>...</answer>` block. With `ignore_think`, reasoning inside
`<think>...</think>` is dropped first, so an answer the model only tried out
while thinking does not count. `None` means nothing could be extracted (an
extraction failure), as opposed to a wrong answer.

Decisions on edge cases:
- A box without braces (`\\boxed5`, `\\boxed 5`, `$\\boxed 42$.`) holds the text up
  to the next space or `$`, less trailing `.,;`: TeX would box one token, but
  `\\boxed 42` means 42.
- Boxes listed one after another, separated only by `,`, `and` or `or` (and `$`),
  form one answer, joined by commas: `\\boxed{2} and \\boxed{3}` -> `2, 3`, the
  set math-verify reads from such a response. Boxes with other text between them
  are not joined: the last one is the final answer (`first \\boxed{3}, then
  \\boxed{4}` -> `4`; math-verify itself would read {3, 4}).
"""

from __future__ import annotations

import re

from rl_onoff.tasks.templates import FORMAT_INSTRUCTIONS

_BOX_RE = re.compile(r"\\(?:boxed|fbox)(?![a-zA-Z])")
_BARE_ARGUMENT_RE = re.compile(r"\s*([^\s${}]+)")
_LIST_SEPARATOR_RE = re.compile(r"[\s$]*(?:,|,?\s*(?:and|or))[\s$]*")
_THINK_BLOCK_RE = re.compile(r"<think>.*?</think>", re.DOTALL)
_ANSWER_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_MATH_DELIMITERS = (("$$", "$$"), ("$", "$"), ("\\[", "\\]"), ("\\(", "\\)"))


def check_format(format: str) -> None:
    """Raise ValueError for an answer format that has no extraction rule."""
    if format not in FORMAT_INSTRUCTIONS:
        raise ValueError(f"unknown answer format {format!r}; allowed: {sorted(FORMAT_INSTRUCTIONS)}")


def extract_answer(response: str, format: str = "boxed", ignore_think: bool = True) -> str | None:
    """The final answer stated in `response`, or None when it states none."""
    check_format(format)
    text = strip_think(response) if ignore_think else response
    if format == "boxed":
        return last_boxed(text)
    return last_answer_tag(text)


def strip_think(text: str) -> str:
    """`text` without its reasoning.

    Closed `<think>` blocks are removed; a lone `</think>` (the opening tag was
    in the prompt) drops everything before it; an unclosed `<think>` (the
    response was cut while thinking) drops everything after it.
    """
    text = _THINK_BLOCK_RE.sub("", text)
    if "</think>" in text:
        text = text.rsplit("</think>", 1)[1]
    return text.split("<think>", 1)[0]


def last_boxed(text: str) -> str | None:
    """The last complete, non-empty box in `text`, with the boxes listed right before it.

    Empty boxes (an echoed instruction) and unclosed ones (a cut response) are
    not answers, so the search moves on to the previous box.
    """
    boxes = [box for box in map(_box_at, _BOX_RE.finditer(text)) if box]
    if not boxes:
        return None
    listed = [boxes[-1]]
    for box in reversed(boxes[:-1]):
        if not _LIST_SEPARATOR_RE.fullmatch(text, box[1], listed[0][2]):
            break
        listed.insert(0, box)
    return ", ".join(content for content, _, _ in listed)


def last_answer_tag(text: str) -> str | None:
    """Content of the last `<answer>` block, unwrapped from a box or `$...$`."""
    blocks = _ANSWER_RE.findall(text)
    if not blocks:
        return None
    answer = blocks[-1]
    answer = last_boxed(answer) or _strip_math_delimiters(answer.strip())
    return answer or None


def _box_at(command: re.Match) -> tuple[str, int, int] | None:
    """(argument, its end, the command's start) of a matched box command; None for an
    empty or unclosed box."""
    text, start, command_start = command.string, command.end(), command.start()
    brace = len(text) - len(text[start:].lstrip())
    if text.startswith("{", brace):
        end = _closing_brace(text, brace)
        content = text[brace + 1:end].strip() if end is not None else ""
        return (content, end + 1, command_start) if content else None
    bare = _BARE_ARGUMENT_RE.match(text, start)
    if not bare:
        return None
    content = bare.group(1).rstrip(".,;")
    return (content, bare.end(), command_start) if content else None


def _closing_brace(text: str, open_at: int) -> int | None:
    """Index of the brace closing the one at `open_at`, or None when it never closes.

    Escaped braces (`\\{`, `\\}`) are content, not grouping.
    """
    depth = 0
    i = open_at
    while i < len(text):
        char = text[i]
        if char == "\\":
            i += 2
            continue
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return None


def _strip_math_delimiters(answer: str) -> str:
    """`$x$`, `\\(x\\)`, `\\[x\\]` -> `x`: the answer is parsed as math anyway."""
    for left, right in _MATH_DELIMITERS:
        if len(answer) > len(left) + len(right) and answer.startswith(left) and answer.endswith(right):
            return answer[len(left):-len(right)].strip()
    return answer
