"""torchrun: a run split over processes (or "nodes" on 127.0.0.1) gives the files one process
writes; a killed multi-process run, rerun, resumes and ends with the uninterrupted result."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from rl_onoff.config import REPO_ROOT

from test_sample import read, sample_config

TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]


def torchrun(*args: str, nproc: int = 2, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([*TORCHRUN, "--standalone", f"--nproc-per-node={nproc}", *args],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout, env=env)


def same_samples(a: Path, b: Path) -> None:
    """Equal results: token ids exactly; log-probs to float noise (a row's logits move in the
    last bits with the padding of the batch it shares)."""
    qa, qb = read(a, "results.json")["questions"], read(b, "results.json")["questions"]
    assert [q["id"] for q in qa] == [q["id"] for q in qb]
    for x, y in zip(qa, qb):
        assert (x["maj_answer"], x["maj_reward"]) == (y["maj_answer"], y["maj_reward"])
        for s, t in zip(x["samples"], y["samples"]):
            lp, lq = s.pop("sampler_logprobs"), t.pop("sampler_logprobs")
            assert s == t
            assert max(abs(u - v) for u, v in zip(lp, lq)) < 1e-4
    sa, sb = read(a, "statistics.json"), read(b, "statistics.json")
    for key in ("avg@n", "pass@k", "maj@n", "maj@k", "ci95"):
        assert sa[key] == sb[key]


def test_00_on_two_processes_equals_one(write_config, tmp_path, tiny_random_model):
    from rl_onoff.config import load_config
    from rl_onoff.sample.run import run_sample

    one, two = tmp_path / "one", tmp_path / "two"
    run_sample(load_config(sample_config(write_config, one, tiny_random_model)))
    proc = torchrun("exp/00-sample.py", "--config",
                    str(sample_config(write_config, two, tiny_random_model)))
    assert proc.returncode == 0, proc.stderr[-3000:]
    same_samples(one, two)
    assert sorted(p.name for p in two.glob("progress*")) == ["progress.rank0.jsonl",
                                                              "progress.rank1.jsonl"]
    runs = [json.loads(p.read_text()) for p in (tmp_path / "runs").glob("00-sample/*/run.json")]
    assert [r["world_size"] for r in runs if r["output_dir"] == str(two)] == [2]


def test_a_killed_two_process_run_resumes_to_the_uninterrupted_result(
        write_config, tmp_path, tiny_random_model):
    from rl_onoff.config import load_config
    from rl_onoff.sample.run import run_sample

    straight, killed = tmp_path / "straight", tmp_path / "killed"
    settings = {"max_new_tokens": 48, "batch_size": 4, "dataset": {"num_examples": 8}}
    run_sample(load_config(sample_config(write_config, straight, tiny_random_model, **settings)))
    config = sample_config(write_config, killed, tiny_random_model, **settings)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([*TORCHRUN, "--standalone", "--nproc-per-node=2", "exp/00-sample.py",
                             "--config", str(config)], cwd=REPO_ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 300
    rank1 = killed / "progress.rank1.jsonl"
    while time.time() < deadline and proc.poll() is None:
        if rank1.is_file() and rank1.read_text().count("\n") >= 4:
            break
        time.sleep(0.01)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / "results.json").exists()
    rerun = torchrun("exp/00-sample.py", "--config", str(config))
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    same_samples(straight, killed)
    lines = sum(p.read_text().count("\n") for p in killed.glob("progress*.jsonl"))
    assert lines == 8 * 4, "no sample drawn twice"


def test_a_single_process_under_torchrun_writes_the_plain_layout(write_config, tmp_path,
                                                                 tiny_random_model):
    out = tmp_path / "out"
    proc = torchrun("exp/00-sample.py", "--config",
                    str(sample_config(write_config, out, tiny_random_model)), nproc=1)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "progress.jsonl").is_file() and (out / "results.json").is_file()
