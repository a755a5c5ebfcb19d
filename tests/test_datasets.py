"""The dataset registry: benchmark files, generic local files, offline errors, arith."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rl_onoff.data import load_dataset
from rl_onoff.data.files import empty_rows, reference_answer

SHARED = Path(__file__).resolve().parents[2] / "shared/data/rl_onoff"
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason=f"no shared data at {SHARED}")

SHARED_SPLITS = [("aime2025", "test", 30), ("amc23", "test", 40), ("gsm8k_level1", "train", 8388),
                 ("gsm8k_level1", "test", 500), ("math", "train", 7500), ("math", "test", 5000)]
# Source rows whose answer is empty: their solutions end in a literal `\boxed{}`.
KNOWN_EMPTY = {("math", "train"): ["math-train-005341", "math-train-005343"]}


@needs_shared
@pytest.mark.parametrize("name, split, count", SHARED_SPLITS)
def test_shared_benchmarks_load_with_question_and_answer(name, split, count):
    records = load_dataset(name, split=split, path=SHARED / name)
    assert len(records) == count
    assert len({r["id"] for r in records}) == count
    assert {r["source"] for r in records} == {name}
    empty = empty_rows(records)
    listing = [(r["id"], r["question"][:60], r["answer"]) for r in records if r["id"] in empty]
    assert empty == KNOWN_EMPTY.get((name, split), []), f"rows with an empty question or answer: {listing}"


@needs_shared
def test_gsm8k_level1_unwraps_question_and_keeps_math500_metadata():
    records = load_dataset("gsm8k_level1", split="test", path=SHARED / "gsm8k_level1")
    assert not any(r["question"].startswith("Question:") for r in records)
    assert not any("Let's think step by step" in r["question"] for r in records)
    assert {r["level"] for r in records} == {1, 2, 3, 4, 5}
    assert all(r["subject"] and r["solution"] for r in records)


@needs_shared
def test_math_metadata_and_answers_recovered_from_solutions():
    records = load_dataset("math", split="train", path=SHARED)  # <path>/<name>/<split>.parquet
    assert {r.get("level") for r in records} == {1, 2, 3, 4, 5, None}  # 2 rows say 'Level ?'
    assert records[0]["subject"] == "Algebra" and "\\boxed{0}" in records[0]["solution"]
    assert records[7301]["answer"] == "\\begin{pmatrix} 0 & 3 \\\\ 0 & -1 \\end{pmatrix}"


@needs_shared
def test_math_filters_and_num_examples():
    path = SHARED / "math"
    level5 = load_dataset("math", split="test", path=path, levels=[5])
    assert len(level5) == 1324 and {r["level"] for r in level5} == {5}
    assert len(load_dataset("math", split="test", path=path, levels=["1"])) == 437
    algebra = load_dataset("math", split="test", path=path, subjects=["algebra"], levels=[1, 2],
                           num_examples=50)
    assert len(algebra) == 50
    assert all(r["subject"] == "Algebra" and r["level"] in (1, 2) for r in algebra)
    assert [r["id"] for r in load_dataset("math", split="test", path=path, num_examples=3)] == [
        "math-test-000000", "math-test-000001", "math-test-000002"]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def test_files_jsonl_with_field_map(tmp_path):
    rows = [{"problem": "1+1?", "reward_model": {"ground_truth": "2"}, "meta": {"lvl": "Level 2"},
             "tags": ["Arithmetic"]},
            {"problem": "2+2?", "reward_model": {"ground_truth": ""}, "meta": {"lvl": "3"},
             "tags": ["Arithmetic"]}]
    file = write_jsonl(tmp_path / "mine.jsonl", rows)
    field_map = {"question": "problem", "answer": "reward_model.ground_truth",
                 "level": "meta.lvl", "subject": "tags.0"}
    records = load_dataset("files", split="test", path=str(file), field_map=field_map)
    assert records[0] == {"id": "mine-test-000000", "question": "1+1?", "answer": "2",
                          "source": "mine", "level": 2, "subject": "Arithmetic"}
    assert empty_rows(records) == ["mine-test-000001"]  # kept, reported
    assert len(load_dataset("files", split="test", path=file, field_map=field_map, levels=[3])) == 1


def test_local_copy_in_hub_columns(tmp_path):
    write_jsonl(tmp_path / "test.jsonl", [
        {"question": "Tom has 3 apples and buys 4. How many?", "answer": "3 + 4 = 7\n#### 7"}])
    assert load_dataset("gsm8k", split="test", path=tmp_path)[0]["answer"] == "7"
    math = tmp_path / "math.json"
    math.write_text(json.dumps([{"problem": "Half of 1?", "level": "Level 1", "type": "Algebra",
                                 "solution": "It is $\\boxed{\\frac{1}{2}}$."}]), encoding="utf-8")
    record = load_dataset("math", split="test", path=math)[0]
    assert (record["answer"], record["level"], record["subject"]) == ("\\frac{1}{2}", 1, "Algebra")


def test_bad_local_inputs_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist.*`path`"):
        load_dataset("math", split="test", path=tmp_path / "nowhere")
    write_jsonl(tmp_path / "train.jsonl", [{"question": "q", "answer": "a"}])
    with pytest.raises(ValueError, match=r"no split 'test'.*splits there: \['train'\]"):
        load_dataset("files", split="test", path=tmp_path)
    with pytest.raises(ValueError, match=r"train.jsonl: field_map\['answer'\] = 'truth.target'"):
        load_dataset("files", split="train", path=tmp_path, field_map={"answer": "truth.target"})
    with pytest.raises(ValueError, match="not record fields"):
        load_dataset("files", split="train", path=tmp_path, field_map={"questoin": "q"})
    no_answer = write_jsonl(tmp_path / "bare.jsonl", [{"question": "q"}])
    with pytest.raises(ValueError, match="bare.jsonl: row 0 has no answer field.*field_map"):
        load_dataset("files", path=no_answer)
    with pytest.raises(ValueError, match="needs the `path` option"):
        load_dataset("files")


def test_offline_hub_error_says_to_set_path(monkeypatch):
    pytest.importorskip("datasets")  # imported before the env change, as in a running program
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(RuntimeError) as info:
        load_dataset("gsm8k", split="test")
    message = str(info.value)
    assert "'gsm8k'" in message and "'test'" in message and "openai/gsm8k" in message
    assert "`path`" in message and ".dataset.path" in message
    with pytest.raises(ValueError, match=r"math500 has splits \['test'\]"):
        load_dataset("math500", split="train")


def test_a_worked_solutions_answer_is_its_last_box_nested_braces_kept():
    assert reference_answer("so $\\boxed{1}$, then $\\boxed{\\frac{a}{b}}$.") == "\\frac{a}{b}"
    assert reference_answer("no box here") == "no box here"
    assert reference_answer("cut \\boxed{12") == ""


def test_arith_test_split_is_fixed_and_disjoint_from_train():
    test = load_dataset("arith", split="test")
    assert len(test) == 1000
    assert {r["level"] for r in test} == {1, 2, 3, 4, 5}
    assert all(r["question"] and r["answer"] for r in test)
    assert load_dataset("arith", split="test") == test
    train = load_dataset("arith", split="train", num_examples=2000)
    assert len(train) == 2000
    assert not {r["question"] for r in train} & {r["question"] for r in test}
