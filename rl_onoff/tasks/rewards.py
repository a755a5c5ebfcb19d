"""Rewards: is the final answer of a response mathematically equal to the reference?

The `math_verify` reward is 1.0 when math-verify finds the extracted answer
equivalent to the reference, else 0.0. Both sides are parsed the same way: as
LaTeX inside `\\boxed{}`, so a bare reference such as `\\frac{6}{7}` is read
whole. (math-verify's plain-expression extraction is not used: on answers the
LaTeX parser cannot read it picks out fragments, e.g. `19` from `19{}43`.)

Symbolic comparison can run for ever (`\\boxed{9^{9^{9^{9}}}}`) and math-verify's
own timeout relies on `signal.alarm`, which only works in the main thread. So
parsing and comparing run in a persistent worker subprocess, reused across
items and killed and replaced when an item exceeds its time bound; this works
from any thread. `score_many(workers=N)` and `ScorePool` spread items over N
such subprocesses (one item each at a time, the same bound per item); a
`ScorePool` kept open scores one batch while the caller generates the next.

Answers that are equal as strings after normalization are decided without the
worker. Normalization drops only layout that never changes the meaning:
`\\left`/`\\right`, spacing commands (`\\,` `\\!` ...), `\\dfrac`, and whitespace
next to anything but a letter or digit. Whitespace between two letters or
digits stays: `2 3` is not `23` (math-verify reads it as another number), so
such answers go to math-verify.
"""

from __future__ import annotations

import atexit
import functools
import json
import logging
import os
import queue
import re
import resource
import select
import subprocess
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from rl_onoff.tasks.extract import check_format, extract_answer

DEFAULT_TIMEOUT = 5.0
STARTUP_TIMEOUT = 120.0  # importing sympy on a busy machine; not charged to any item

_SPACING_RE = re.compile(r"\\(?:left|right)(?![a-zA-Z])|(?<!\\)\\[!,;: ]")
_WHITESPACE_RE = re.compile(r"\s+(?![a-zA-Z0-9])|(?<![a-zA-Z0-9])\s+")
_SPACES_RE = re.compile(r"\s+")
_MATRIX_RE = re.compile(r"\\begin\{([pbvB]?matrix)\}(.*?)\\end\{\1\}", re.DOTALL)
_LOST_ROW_BREAK_RE = re.compile(r"(?<!\\)\\(?=[\d.+-])")


@dataclass(frozen=True)
class ScoreResult:
    """A response's reward and how it was reached.

    status: "ok" (compared), "no_answer" (nothing extracted: an extraction
    failure), "timeout" (the comparison exceeded the bound), "error" (empty
    reference or a failed comparison).
    """

    reward: float
    extracted: str | None
    status: str


def score(response: str, reference: str, format: str = "boxed") -> float:
    """The reward of one response: 1.0 if its final answer equals `reference`."""
    return score_detailed(response, reference, format).reward


def score_detailed(response: str, reference: str, format: str = "boxed", ignore_think: bool = True,
                   timeout: float | None = DEFAULT_TIMEOUT) -> ScoreResult:
    """Score one response, keeping the extracted answer and the outcome.

    `timeout` bounds the math-verify comparison in seconds (None: unbounded).
    """
    return _score_with(_WORKER, response, reference, format, ignore_think, timeout)


def score_many(responses: Sequence[str], references: Sequence[str], format: str = "boxed",
               ignore_think: bool = True, timeout: float | None = DEFAULT_TIMEOUT,
               workers: int = 1) -> list[ScoreResult]:
    """Score responses against their references (same length), one bound per item.

    workers > 1 starts that many worker processes for this call (about a second
    each); to score many batches, keep a `ScorePool` open instead.
    """
    _check_batch(responses, references, format)
    if workers == 1:
        return [score_detailed(response, reference, format, ignore_think, timeout)
                for response, reference in zip(responses, references)]
    with ScorePool(workers, timeout) as pool:
        return pool.submit(responses, references, format, ignore_think).result()


class ScorePool:
    """`workers` math-verify processes scoring items in parallel, each item under `timeout`.

    `submit` returns at once with a Future, so the caller can generate the next
    batch while this one is scored. Close it (or use it as a context manager):
    that waits for submitted items and ends the processes.
    """

    def __init__(self, workers: int, timeout: float | None = DEFAULT_TIMEOUT) -> None:
        if not isinstance(workers, int) or workers < 1:
            raise ValueError(f"ScorePool needs workers >= 1 (the number of scoring processes); got {workers!r}")
        self.timeout = timeout
        self._workers = [_Worker() for _ in range(workers)]
        self._idle: queue.SimpleQueue[_Worker] = queue.SimpleQueue()
        for worker in self._workers:
            self._idle.put(worker)
        self._threads = ThreadPoolExecutor(workers, thread_name_prefix="score")
        for _ in self._workers:  # start the processes side by side, before the first batch
            self._threads.submit(self._on_idle_worker, _Worker.ensure_started)

    def submit(self, responses: Sequence[str], references: Sequence[str], format: str = "boxed",
               ignore_think: bool = True) -> Future:
        """A Future of the responses' ScoreResults, in order (raises what an item raised)."""
        _check_batch(responses, references, format)
        return _gather([self._threads.submit(self._on_idle_worker, _score_with, response, reference,
                                             format, ignore_think, self.timeout)
                        for response, reference in zip(responses, references)])

    def close(self) -> None:
        self._threads.shutdown(wait=True)
        for worker in self._workers:
            worker.close()

    def __enter__(self) -> ScorePool:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _on_idle_worker(self, function, *args):
        """`function(worker, *args)` on a worker no other thread is using."""
        worker = self._idle.get()
        try:
            return function(worker, *args)
        finally:
            self._idle.put(worker)


def _gather(items: list[Future]) -> Future:
    """One Future holding the results of `items` in order, set when the last one is done."""
    batch: Future = Future()
    remaining = len(items)
    lock = threading.Lock()

    def one_done(_: Future) -> None:
        nonlocal remaining
        with lock:
            remaining -= 1
            if remaining:
                return
        try:
            batch.set_result([item.result() for item in items])
        except BaseException as error:  # noqa: BLE001  (handed to whoever waits on the batch)
            batch.set_exception(error)

    if not items:
        batch.set_result([])
    for item in items:
        item.add_done_callback(one_done)
    return batch


def _check_batch(responses: Sequence[str], references: Sequence[str], format: str) -> None:
    if len(responses) != len(references):
        raise ValueError(f"{len(responses)} responses but {len(references)} references")
    check_format(format)


def _score_with(worker: _Worker, response: str, reference: str, format: str, ignore_think: bool,
                timeout: float | None) -> ScoreResult:
    extracted = extract_answer(response, format, ignore_think)
    if extracted is None:
        return ScoreResult(0.0, None, "no_answer")
    if not reference or not reference.strip():
        return ScoreResult(0.0, extracted, "error")
    outcome = _compare(reference, extracted, timeout, worker)
    reward = 1.0 if outcome == "equal" else 0.0
    return ScoreResult(reward, extracted, "ok" if outcome in ("equal", "different") else outcome)


def answers_equivalent(a: str, b: str, timeout: float | None = DEFAULT_TIMEOUT) -> bool:
    """Whether two extracted answers are mathematically equal (for majority voting).

    A timeout or failed comparison counts as not equal.
    """
    return _compare(a, b, timeout) == "equal"


def normalize(answer: str) -> str:
    """`answer` without layout that never changes its meaning (see the module notes)."""
    answer = answer.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    answer = _SPACING_RE.sub("", answer)
    return _WHITESPACE_RE.sub("", _SPACES_RE.sub(" ", answer))


def _compare(gold: str, pred: str, timeout: float | None, worker: _Worker | None = None) -> str:
    """The outcome: equal, different, timeout or error."""
    if normalize(gold) == normalize(pred):
        return "equal"
    return (worker or _WORKER).compare(gold, pred, timeout)


class _ItemTimeout(Exception):
    """The worker did not answer within an item's bound."""


class _Worker:
    """The math-verify subprocess, answering one comparison at a time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._pending = b""

    def compare(self, gold: str, pred: str, timeout: float | None) -> str:
        with self._lock:
            self._start_if_stopped()
            try:
                self._send({"gold": gold, "pred": pred, "timeout": timeout})
                reply = self._receive(timeout)
            except _ItemTimeout:
                self.close()
                return "timeout"
            except (OSError, EOFError, ValueError):  # the worker died mid-item
                self.close()
                return "error"
            except BaseException:  # e.g. KeyboardInterrupt: its late reply would answer the next item
                self.close()
                raise
            if "error" in reply:
                return "error"
            return "equal" if reply["equal"] else "different"

    def ensure_started(self) -> None:
        """Start the process now rather than at the first comparison."""
        with self._lock:
            self._start_if_stopped()

    def _start_if_stopped(self) -> None:
        if self._proc is None or self._proc.poll() is not None:
            self._start()

    def close(self) -> None:
        """Kill the worker (a later comparison starts a fresh one)."""
        if self._proc is None:
            return
        self._proc.kill()
        self._proc.wait()
        self._proc.stdin.close()
        self._proc.stdout.close()
        self._proc = None

    def forget(self) -> None:
        """In a forked child: the worker belongs to the parent; drop our pipe ends."""
        self._lock = threading.Lock()
        if self._proc is not None:
            self._proc.stdin.close()
            self._proc.stdout.close()
        self._proc = None

    def _start(self) -> None:
        self.close()
        package_root = str(Path(__file__).resolve().parents[2])
        code = (f"import sys; sys.path.insert(0, {package_root!r}); "
                "from rl_onoff.tasks.rewards import _serve; _serve()")
        # Own session: a Ctrl-C meant for the caller does not hit the worker.
        self._proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, bufsize=0, start_new_session=True)
        self._pending = b""
        try:
            self._receive(STARTUP_TIMEOUT)
        except (_ItemTimeout, EOFError, ValueError) as error:
            self.close()
            raise RuntimeError("the math-verify worker failed to start (see its stderr)") from error

    def _send(self, request: dict) -> None:
        self._proc.stdin.write(json.dumps(request).encode() + b"\n")
        self._proc.stdin.flush()

    def _receive(self, timeout: float | None) -> dict:
        """The next reply line; `_ItemTimeout` after `timeout` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        fd = self._proc.stdout.fileno()
        poller = select.poll()  # unlike select(), works with any fd number
        poller.register(fd, select.POLLIN)
        while b"\n" not in self._pending:
            wait_ms = None if deadline is None else max(0, int((deadline - time.monotonic()) * 1000))
            if not poller.poll(wait_ms):
                raise _ItemTimeout
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                raise EOFError("the math-verify worker exited")
            self._pending += chunk
        line, self._pending = self._pending.split(b"\n", 1)
        return json.loads(line)


_WORKER = _Worker()
atexit.register(_WORKER.close)
os.register_at_fork(after_in_child=_WORKER.forget)


# --- inside the worker subprocess ---------------------------------------------

def _serve() -> None:
    """Worker loop: one JSON request per stdin line, one JSON reply per stdout line."""
    replies = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # stray prints from libraries must not corrupt the replies
    import math_verify  # noqa: F401  (the slow import happens before "ready")
    # math-verify warns that its own timeout is off; the bound is enforced by the caller.
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    _reply(replies, {"ready": True})
    for line in sys.stdin:
        request = json.loads(line)
        _limit_cpu(request["timeout"])
        try:
            reply = {"equal": _math_equal(request["gold"], request["pred"])}
        except Exception as error:  # noqa: BLE001  (one bad item must not end the worker)
            reply = {"error": type(error).__name__}  # str(error) of sympy objects can hang
        _reply(replies, reply)


def _reply(stream, message: dict) -> None:
    stream.write(json.dumps(message) + "\n")
    stream.flush()


def _limit_cpu(timeout: float | None) -> None:
    """Let the kernel kill this worker if an item outlives its bound.

    The caller kills it first; this guards the case where the caller itself
    died mid-item, which would otherwise leave an orphan computing for ever.
    """
    hard = resource.getrlimit(resource.RLIMIT_CPU)[1]
    soft = hard
    if timeout is not None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        soft = int(usage.ru_utime + usage.ru_stime + timeout) + 2
        if hard != resource.RLIM_INFINITY:
            soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))


def _math_equal(gold: str, pred: str) -> bool:
    from math_verify import verify

    return verify(list(_parse(gold)), list(_parse(pred)), timeout_seconds=None)


@functools.lru_cache(maxsize=4096)
def _parse(answer: str) -> tuple:
    """math-verify's readings of one answer (cached: a reference recurs per sample)."""
    from math_verify import LatexExtractionConfig, parse

    boxed = f"\\boxed{{{_repair_matrix_rows(answer)}}}"
    return tuple(parse(boxed, [LatexExtractionConfig()], parsing_timeout=None))


def _repair_matrix_rows(answer: str) -> str:
    """Restore row breaks lost as single backslashes (`\\begin{pmatrix}6\\3\\end{pmatrix}`).

    Some MATH references have them; `\\3` means nothing in LaTeX, so this only
    changes answers that could not be parsed otherwise.
    """
    def repair(match: re.Match) -> str:
        env, body = match.groups()
        body = _LOST_ROW_BREAK_RE.sub(lambda _: "\\\\", body)
        return f"\\begin{{{env}}}{body}\\end{{{env}}}"

    return _MATRIX_RE.sub(repair, answer)
