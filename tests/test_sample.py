"""00-sample end to end: files, statistics checked independently, resume, config changes, and
the invariant that a sample depends on (seed, question id, sample index) only."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rl_onoff.config import REPO_ROOT, load_config
from rl_onoff.sample.run import run_sample
from rl_onoff.stage import StageError
from rl_onoff.stats import pass_at_k

SAMPLING_KEYS = ("temperature", "top_p", "top_k", "min_p", "max_new_tokens", "stop")


def sample_config(write_config, out: Path, model: str, seed: int = 0, **section) -> Path:
    """A 00 section; sampling keys given flat here go into its `sampling` block."""
    sampling = {"max_new_tokens": 24, **{k: section.pop(k) for k in SAMPLING_KEYS if k in section}}
    base = {"dataset": {"num_examples": 6}, "num_samples": 4, "batch_size": 8,
            "output_dir": str(out), "sampling": sampling, "task": {"reward_workers": 1}}
    base.update(section)
    return write_config({"defaults": {"model": model, "seed": seed}, "00_sample": base})


def samples_by_key(out: Path) -> dict:
    return {(q["id"], i): s["token_ids"] for q in read(out, "results.json")["questions"]
            for i, s in enumerate(q["samples"])}


def read(out: Path, name: str):
    return json.loads((out / name).read_text())


def integer_in_last_box(text: str):
    """An independent reading of arith answers: the integer in the last \\boxed{}."""
    found = re.findall(r"\\boxed\{(-?\d+)\}", text)
    return int(found[-1]) if found else None


def test_tiny_arith_statistics_match_an_independent_count(write_config, tmp_path):
    out = tmp_path / "out"
    cfg = load_config(sample_config(write_config, out, "tiny-arith", max_new_tokens=96,
                                    dataset={"num_examples": 20}))
    stats = run_sample(cfg)
    results = read(out, "results.json")
    assert read(out, "statistics.json") == json.loads(json.dumps(stats))
    correct = []
    for q in results["questions"]:
        assert len(q["samples"]) == 4
        right = [integer_in_last_box(s["text"]) == int(q["reference"]) for s in q["samples"]]
        assert [s["reward"] == 1.0 for s in q["samples"]] == right
        correct.append(sum(right))
    n = 4
    assert stats["avg@n"] == pytest.approx(sum(c / n for c in correct) / len(correct))
    for k in (1, 2, 4):
        expected = sum(pass_at_k(n, c, k) for c in correct) / len(correct)
        assert stats["pass@k"][str(k)] == pytest.approx(expected)
    assert 0 < stats["avg@n"] < 1, "tiny-arith should be right sometimes, wrong sometimes"
    assert set(stats["by_level"]) == {"1", "2", "3", "4", "5"}


def test_results_hold_exact_tokens_and_provenance(write_config, tmp_path, tiny_random_model):
    from rl_onoff.models import load_tokenizer

    out = tmp_path / "out"
    run_sample(load_config(sample_config(write_config, out, tiny_random_model)))
    results = read(out, "results.json")
    tokenizer = load_tokenizer(tiny_random_model)
    for q in results["questions"]:
        assert q["prompt_token_ids"] == tokenizer(q["prompt"])["input_ids"]
        for s in q["samples"]:
            assert s["num_tokens"] == len(s["token_ids"]) <= 24
            assert s["text"] == tokenizer.decode(s["token_ids"], skip_special_tokens=True)
            assert s["finish_reason"] in ("eos", "length")
            assert s["status"] in ("ok", "no_answer", "timeout", "error")
            assert len(s["sampler_logprobs"]) == len(s["token_ids"])
            assert all(lp <= 0 for lp in s["sampler_logprobs"])
    provenance = read(out, "run_config.json")
    assert provenance["config"]["00_sample"]["num_samples"] == 4
    assert provenance["environment"]["packages"]["torch"]
    assert provenance["model"]["name"] == tiny_random_model
    run_dirs = list((tmp_path / "runs" / "00-sample").iterdir())
    assert len(run_dirs) == 1
    assert json.loads((run_dirs[0] / "run.json").read_text())["status"] == "finished"
    assert (run_dirs[0] / "metrics.jsonl").read_text().count("\n") == 3  # one line per batch


def test_greedy_ignores_the_seed(write_config, tmp_path, tiny_random_model):
    a, b = tmp_path / "a", tmp_path / "b"
    run_sample(load_config(sample_config(write_config, a, tiny_random_model, temperature=0)))
    run_sample(load_config(sample_config(write_config, b, tiny_random_model, temperature=0,
                                         seed=5)))
    tokens = lambda out: [s["token_ids"] for q in read(out, "results.json")["questions"]  # noqa: E731
                          for s in q["samples"]]
    assert tokens(a) == tokens(b)
    assert all(len({tuple(s["token_ids"]) for s in q["samples"]}) == 1
               for q in read(a, "results.json")["questions"])


def test_kill_and_restart_loses_and_duplicates_nothing(write_config, tmp_path, tiny_random_model):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    # 24 batches: the progress file lags generation by one scored batch, so the job must be
    # long enough to be still running when its first lines appear
    settings = {"max_new_tokens": 48, "batch_size": 4, "num_samples": 16}
    run_sample(load_config(sample_config(write_config, straight, tiny_random_model, **settings)))
    config = sample_config(write_config, killed, tiny_random_model, **settings)
    proc = subprocess.Popen([sys.executable, "exp/00-sample.py", "--config", str(config)],
                            cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    progress = killed / "progress.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if progress.is_file() and progress.read_text().count("\n") >= 4:
            break
        time.sleep(0.01)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = progress.read_text().count("\n")
    assert 4 <= partial < 96 and not (killed / "results.json").exists()
    run_sample(load_config(config))
    pairs = [(line["qid"], line["s"]) for line in map(json.loads, progress.read_text().splitlines())]
    assert len(pairs) == len(set(pairs)) == 96
    assert read(killed, "results.json")["questions"] == read(straight, "results.json")["questions"]


def test_changed_config_is_refused_or_written_beside(write_config, tmp_path, tiny_random_model):
    out = tmp_path / "out"
    run_sample(load_config(sample_config(write_config, out, tiny_random_model)))
    before = (out / "results.json").read_bytes()
    changed = sample_config(write_config, out, tiny_random_model, temperature=0.5)
    with pytest.raises(StageError, match=r"temperature: 1\.0 -> 0\.5.*on_config_change"):
        run_sample(load_config(changed))
    assert (out / "results.json").read_bytes() == before
    run_sample(load_config(changed, ["00_sample.on_config_change=new_dir"]))
    beside = [p for p in tmp_path.iterdir() if p.name.startswith("out-")]
    assert len(beside) == 1 and (beside[0] / "results.json").is_file()
    assert (out / "results.json").read_bytes() == before


def test_a_sample_never_depends_on_batching_or_the_number_of_questions(
        write_config, tmp_path, tiny_random_model):
    """batch_size 7, 32, 64 and num_examples 3 vs 6: the shared questions' samples are equal."""
    runs = {}
    for name, extra in {"b7": {"batch_size": 7}, "b32": {"batch_size": 32},
                        "b64": {"batch_size": 64},
                        "few": {"batch_size": 5, "dataset": {"num_examples": 3}}}.items():
        out = tmp_path / name
        run_sample(load_config(sample_config(write_config, out, tiny_random_model, **extra)))
        runs[name] = samples_by_key(out)
    assert runs["b7"] == runs["b32"] == runs["b64"]
    assert len(runs["b7"]) == 24 and len(runs["few"]) == 12
    assert all(runs["b7"][key] == tokens for key, tokens in runs["few"].items())
    assert len({tuple(t) for t in runs["b7"].values()}) > 12, "samples should differ"


def test_more_samples_in_the_same_folder_keep_the_first_ones(write_config, tmp_path,
                                                              tiny_random_model):
    out = tmp_path / "out"
    run_sample(load_config(sample_config(write_config, out, tiny_random_model, num_samples=2)))
    first = samples_by_key(out)
    run_sample(load_config(sample_config(write_config, out, tiny_random_model, num_samples=4)))
    more = samples_by_key(out)
    assert len(more) == 24 and all(more[key] == tokens for key, tokens in first.items())
    lines = (out / "progress.jsonl").read_text().count("\n")
    assert lines == 24, "the first 12 samples were not drawn again"


def test_the_seed_changes_the_samples(write_config, tmp_path, tiny_random_model):
    a, b = tmp_path / "a", tmp_path / "b"
    run_sample(load_config(sample_config(write_config, a, tiny_random_model)))
    run_sample(load_config(sample_config(write_config, b, tiny_random_model, seed=1)))
    assert samples_by_key(a) != samples_by_key(b)


def test_a_busy_output_folder_stops_a_second_run_and_a_dead_holder_does_not(
        write_config, tmp_path, tiny_random_model):
    """While a live process holds the folder, a run into it exits 2 with one line naming the
    holder and touches nothing; once the holder is killed, its stale lock is taken over."""
    out = tmp_path / "out"
    config = sample_config(write_config, out, tiny_random_model)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; "
         "from rl_onoff.stage import acquire_lock; acquire_lock(Path(sys.argv[1])); "
         "print('locked', flush=True); time.sleep(120)", str(out)],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        busy = subprocess.run([sys.executable, "exp/00-sample.py", "--config", str(config)],
                              cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
        assert busy.returncode == 2
        assert f"in use by another run (pid {holder.pid}" in busy.stderr
        assert "Traceback" not in busy.stderr and busy.stderr.count("\n") == 1
        assert sorted(p.name for p in out.iterdir()) == [".lock"]
    finally:
        holder.kill()
        holder.wait()
    run_sample(load_config(config))
    assert (out / "results.json").is_file() and not (out / ".lock").exists()
