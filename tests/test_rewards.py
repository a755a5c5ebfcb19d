"""Answer extraction and math-verify rewards, down to every shared-data reference."""

from __future__ import annotations

import random
import re
import threading
import time
from pathlib import Path

import pytest

from rl_onoff.tasks import (
    answers_equivalent,
    extract_answer,
    score,
    score_detailed,
    score_many,
)
from rl_onoff.tasks.rewards import _WORKER, ScorePool, normalize

DATA_DIR = Path(__file__).resolve().parents[2] / "shared/data/rl_onoff"
PATHOLOGICAL = "\\boxed{9^{9^{9^{9}}}}"
INTEGER_RE = re.compile(r"-?\d+")
DIGIT_RE = re.compile(r"\d")


# --- extraction ----------------------------------------------------------------

@pytest.mark.parametrize("response, expected", [
    ("so \\boxed{\\frac{6}{7}}.", "\\frac{6}{7}"),
    ("\\boxed{\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}}", "\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}"),
    ("\\boxed{\\{1, 2\\}}", "\\{1, 2\\}"),
    ("first \\boxed{3}, then \\boxed{4}", "4"),
    ("\\boxed{4} and an unfinished \\boxed{5", "4"),
    ("\\boxed{4} echoed instruction \\boxed{}", "4"),
    ("\\fbox{12}", "12"),
    ("so $\\boxed 5$.", "5"),
    ("\\boxed {7}", "7"),
    ("no box here: 42", None),
    ("\\boxed{}", None),
    ("\\boxedfoo{3}", None),
    ("\\boxed5", "5"),  # TeX's single-token argument
    ("so $\\boxed5$.", "5"),
    ("\\boxed\\pi", "\\pi"),
    ("\\boxed}", None),
    ("\\boxed{2} and \\boxed{3}", "2, 3"),  # a listed answer, as math-verify reads it
    ("$\\boxed{2}$, $\\boxed{3}$, or $\\boxed{4}$.", "2, 3, 4"),
    ("\\boxed{1}. So \\boxed{2} and \\boxed{3}", "2, 3"),
    ("\\boxed{\\boxed{2}}", "2"),
])
def test_boxed_extraction(response, expected):
    assert extract_answer(response, "boxed") == expected


@pytest.mark.parametrize("response, ignore_think, expected", [
    ("<think>maybe \\boxed{1}</think> so \\boxed{2}", True, "2"),
    ("<think>maybe \\boxed{1}</think> no final box", True, None),
    ("<think>maybe \\boxed{1}</think> no final box", False, "1"),
    ("thinking (tag in the prompt) \\boxed{1}</think> done \\boxed{2}", True, "2"),
    ("\\boxed{1} <think>cut while thinking \\boxed{2}", True, "1"),
])
def test_think_is_ignored(response, ignore_think, expected):
    assert extract_answer(response, "boxed", ignore_think=ignore_think) == expected


@pytest.mark.parametrize("response, expected", [
    ("<think>so 3</think><answer>5</answer>", "5"),
    ("<think><answer>3</answer></think><answer> \\frac{1}{2} </answer>", "\\frac{1}{2}"),
    ("<answer>1</answer> revised <answer>$x^2$</answer>", "x^2"),
    ("<answer>so \\boxed{7}</answer>", "7"),
    ("<think>the answer is <answer>3</answer></think>", None),
    ("<answer>3", None),
    ("<answer> </answer>", None),
    ("\\boxed{3}", None),
])
def test_structured_extraction(response, expected):
    assert extract_answer(response, "structured") == expected


def test_unknown_format_names_the_allowed_ones():
    with pytest.raises(ValueError, match="boxed.*structured"):
        extract_answer("\\boxed{1}", "latex")
    with pytest.raises(ValueError, match="boxed.*structured"):
        score("\\boxed{1}", "1", format="latex")


# --- rewards -------------------------------------------------------------------

@pytest.mark.parametrize("response, reference", [
    ("... so the answer is \\boxed{\\frac{6}{7}}", "\\frac{6}{7}"),
    ("\\boxed{6/7}", "\\frac{6}{7}"),
    ("\\boxed{\\dfrac{6}{7}}", "\\frac{6}{7}"),
    ("\\boxed{0.5}", "\\frac12"),
    ("\\boxed{\\frac{1}{2}}", "0.5"),
    ("\\boxed{18.9}", "\\$18.90"),
    ("\\boxed{32348}", "32,\\!348"),
    ("\\boxed{x = 5}", "5"),
    ("\\boxed{-\\sqrt{2}, \\sqrt 2}", "\\sqrt{2},-\\sqrt{2}"),
    ("\\boxed{\\left( -7, -24 \\right)}", "(-7,-24)"),
    ("\\boxed{\\begin{pmatrix} 6 \\\\ 3 \\end{pmatrix}}", "\\begin{pmatrix}6\\3\\end{pmatrix}"),
    ("\\boxed{\\text{(C)}}", "C"),
])
def test_equivalent_answers_score_one(response, reference):
    assert score(response, reference) == 1.0


@pytest.mark.parametrize("response, reference", [
    ("\\boxed{7}", "\\frac{6}{7}"),
    ("\\boxed{\\frac{7}{6}}", "\\frac{6}{7}"),
    ("\\boxed{1/3}", "1/2"),
    ("\\boxed{(-7, 24)}", "(-7,-24)"),
])
def test_wrong_answers_score_zero(response, reference):
    assert score(response, reference) == 0.0


def _math_verify_reward(response: str, reference: str) -> float:
    """math-verify's own verdict on a whole response, the way its README calls it."""
    from math_verify import parse, verify

    return 1.0 if verify(parse(f"\\boxed{{{reference}}}"), parse(response)) else 0.0


@pytest.mark.parametrize("response, reference, expected", [
    ("\\boxed{2} and \\boxed{3}", "2,3", 1.0),
    ("$\\boxed{3}$, $\\boxed{2}$", "2,3", 1.0),
    ("\\boxed{2} or \\boxed{3}", "2", 0.0),  # a hedge is not the answer
    ("\\boxed{2 3}", "23", 0.0),  # no whitespace shortcut between digits
    ("\\boxed{2 + 3}", "2+3", 1.0),
    ("\\boxed5", "5", None),  # math-verify reads no box here; we read TeX's argument
])
def test_reward_edge_cases_against_math_verify(response, reference, expected):
    ours = score(response, reference)
    if expected is None:
        assert ours == 1.0 and _math_verify_reward(response, reference) == 0.0
    else:
        assert ours == _math_verify_reward(response, reference) == expected


def test_normalize_keeps_spaces_between_letters_and_digits():
    assert normalize("2 3") != normalize("23")
    assert normalize("x  y") == "x y" != normalize("xy")
    assert normalize(" \\left( 1 , 2 \\right) ") == "(1,2)"
    assert normalize("2 +\n 3") == "2+3"


def test_structured_format_scores():
    assert score("<think>\\boxed{1}</think><answer>$\\frac{6}{7}$</answer>", "6/7", "structured") == 1.0
    assert score("<think><answer>6/7</answer></think><answer>1</answer>", "6/7", "structured") == 0.0


def test_detailed_statuses():
    ok = score_detailed("\\boxed{2}", "2")
    assert (ok.reward, ok.extracted, ok.status) == (1.0, "2", "ok")
    wrong = score_detailed("\\boxed{3}", "2")
    assert (wrong.reward, wrong.status) == (0.0, "ok")
    missing = score_detailed("the answer is 2", "2")
    assert (missing.reward, missing.extracted, missing.status) == (0.0, None, "no_answer")
    assert score_detailed("\\boxed{2}", "  ").status == "error"


def test_score_many_and_answers_equivalent():
    results = score_many(["\\boxed{1}", "\\boxed{0.5}", "none"], ["1", "\\frac{1}{2}", "3"])
    assert [r.reward for r in results] == [1.0, 1.0, 0.0]
    assert [r.status for r in results] == ["ok", "ok", "no_answer"]
    with pytest.raises(ValueError):
        score_many(["\\boxed{1}"], ["1", "2"])
    assert answers_equivalent("\\frac{1}{2}", "0.5")
    assert not answers_equivalent("\\frac{1}{2}", "0.25")


def test_score_pool_times_out_one_item_of_a_parallel_batch():
    responses = [PATHOLOGICAL, "\\boxed{0.5}", "\\boxed{1/3}", "none", "\\boxed{6/7}"]
    references = ["5", "\\frac12", "1/2", "3", "\\frac{6}{7}"]
    with ScorePool(2, timeout=1.0) as pool:
        future = pool.submit(responses, references)
        assert not future.done()  # the caller goes on (generating) while the batch is scored
        results = future.result(timeout=60)
        assert pool.submit([], []).result() == []
    assert [r.status for r in results] == ["timeout", "ok", "ok", "no_answer", "ok"]
    assert [r.reward for r in results] == [0.0, 1.0, 0.0, 0.0, 1.0]
    assert [r.status for r in score_many(responses[:2], references[:2], timeout=1.0, workers=2)] == ["timeout", "ok"]


def test_score_pool_rejects_bad_input():
    with pytest.raises(ValueError, match="workers >= 1"):
        score_many(["\\boxed{1}"], ["1"], workers=0)
    with ScorePool(1) as pool:
        with pytest.raises(ValueError, match="2 references"):
            pool.submit(["\\boxed{1}"], ["1", "2"])
        with pytest.raises(ValueError, match="boxed.*structured"):
            pool.submit(["\\boxed{1}"], ["1"], format="latex")


def _time_pathological(timeout: float) -> tuple[object, float]:
    """Score the pathological answer with a warm worker: startup is not charged to items."""
    assert answers_equivalent("1", "1.0")
    start = time.monotonic()
    result = score_detailed(PATHOLOGICAL, "5", timeout=timeout)
    return result, time.monotonic() - start


def test_pathological_answer_is_bounded():
    result, elapsed = _time_pathological(timeout=1.0)
    assert result.reward == 0.0
    assert result.status in ("timeout", "ok")
    assert elapsed < 3.0
    assert score("\\boxed{3}", "3.0") == 1.0  # the replaced worker still serves


def test_pathological_answer_is_bounded_off_the_main_thread():
    outcome = []
    thread = threading.Thread(target=lambda: outcome.append(_time_pathological(timeout=1.0)))
    thread.start()
    thread.join(timeout=30)
    assert not thread.is_alive()
    result, elapsed = outcome[0]
    assert result.reward == 0.0 and result.status in ("timeout", "ok")
    assert elapsed < 3.0
    assert answers_equivalent("0.5", "\\frac{1}{2}")


def test_concurrent_threads_get_their_own_answers():
    cases = [(f"\\boxed{{{n / 4}}}", f"\\frac{{{n}}}{{4}}", 1.0) for n in range(1, 9)]
    cases += [(f"\\boxed{{{n / 4}}}", f"\\frac{{{n + 1}}}{{4}}", 0.0) for n in range(1, 9)]
    results = {}

    def work(worker_id: int) -> None:
        results[worker_id] = [score(response, reference) for response, reference, _ in cases]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    expected = [reward for _, _, reward in cases]
    assert [results.get(i) for i in range(4)] == [expected] * 4


# --- every reference of the shared data ------------------------------------------

@pytest.fixture(scope="module")
def shared_references() -> list[tuple[str, int, str]]:
    """(file, row, reference) for every record of every shared dataset file."""
    if not DATA_DIR.is_dir():
        pytest.skip(f"no shared data at {DATA_DIR}")
    pq = pytest.importorskip("pyarrow.parquet")
    rows = []
    for path in sorted(DATA_DIR.glob("*/*.parquet")):
        table = pq.read_table(path, columns=["reward_model"])
        for index, record in enumerate(table.column("reward_model").to_pylist()):
            truth = record["ground_truth"]
            reference = truth["target"] if isinstance(truth, dict) else truth
            rows.append((f"{path.parent.name}/{path.name}", index, reference or ""))
    assert rows, f"no parquet files under {DATA_DIR}"
    return rows


def _reason(response: str, reference: str, format: str) -> str:
    result = score_detailed(response, reference, format)
    if not reference.strip():
        return "empty reference"
    if result.status == "no_answer":
        return "reference does not fit in \\boxed{} (unbalanced braces)"
    return f"status={result.status} extracted={result.extracted!r}"


STATED = {
    "boxed": "Let me work through it step by step. ... The final answer is \\boxed{{{}}}.",
    "structured": "<think>Let me work through it step by step. ...</think>\n<answer>{}</answer>",
}


@pytest.mark.parametrize("format", sorted(STATED))
def test_every_shared_reference_scores_one_when_stated(shared_references, format):
    start = time.monotonic()
    failures = []
    for name, index, reference in shared_references:
        response = STATED[format].format(reference)
        if score(response, reference, format) != 1.0:
            failures.append((name, index, reference, _reason(response, reference, format)))
    for failure in failures:
        print(f"{format}: cannot score 1.0: %s row %d reference %r: %s" % failure)
    print(f"{format}: {len(shared_references)} references, {len(failures)} failures, "
          f"{time.monotonic() - start:.1f}s")
    assert len(failures) <= 0.001 * len(shared_references)


def test_math_verify_accepts_shared_references(shared_references):
    """Bypassing the exact-match shortcut: math-verify itself reads each sampled reference."""
    sample = _sample(shared_references, per_file=60)
    rejected = [(name, index, reference) for name, index, reference in sample
                if _WORKER.compare(reference, reference, 5.0) != "equal"]
    assert len(rejected) <= 0.01 * len(sample), rejected


def test_wrong_answers_to_shared_references_score_zero(shared_references):
    sample = [row for row in _sample(shared_references, per_file=60) if DIGIT_RE.search(row[2])]
    for name, index, reference in sample:
        wrong = _change_first_digit(reference)
        assert score(f"\\boxed{{{wrong}}}", reference) == 0.0, (name, index, reference, wrong)
    assert len(sample) >= 200


def test_parallel_scoring_equals_serial_on_shared_references(shared_references):
    """Right answers in another form and wrong answers, so math-verify does the work on both paths."""
    sample = _sample(shared_references, per_file=5)
    responses = [f"\\boxed{{x = {ref}}}" for _, _, ref in sample]
    responses += [f"\\boxed{{{_change_first_digit(ref)}}}" for _, _, ref in sample]
    references = [ref for _, _, ref in sample] * 2
    serial = score_many(responses, references)
    with ScorePool(2) as pool:
        parallel = pool.submit(responses, references).result()
    assert parallel == serial
    assert 0 < sum(r.reward for r in serial) < len(serial)


def _change_first_digit(answer: str) -> str:
    """A different answer of the same shape: `\\frac{6}{7}` -> `\\frac{7}{7}`, `(-7,-24)` -> `(-8,-24)`."""
    return DIGIT_RE.sub(lambda m: str((int(m.group()) + 1) % 10), answer, count=1)


def _sample(rows: list[tuple[str, int, str]], per_file: int) -> list[tuple[str, int, str]]:
    """Up to `per_file` non-empty references of each file, half of them non-integers."""
    rng = random.Random(0)
    by_file: dict[str, list[tuple[str, int, str]]] = {}
    for row in rows:
        if row[2].strip():
            by_file.setdefault(row[0], []).append(row)
    sample = []
    for file_rows in by_file.values():
        integers = [row for row in file_rows if INTEGER_RE.fullmatch(row[2].strip())]
        others = [row for row in file_rows if not INTEGER_RE.fullmatch(row[2].strip())]
        take_others = min(len(others), per_file // 2)
        sample += rng.sample(others, take_others)
        sample += rng.sample(integers, min(len(integers), per_file - take_others))
    return sample
