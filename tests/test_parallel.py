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
    settings = {"max_new_tokens": 48, "batch_size": 4, "num_samples": 12,   # 12 batches a rank:
                "dataset": {"num_examples": 8}}   # still running when rank 1's lines appear
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
    assert lines == 8 * 12, "no sample drawn twice"


def test_a_single_process_under_torchrun_writes_the_plain_layout(write_config, tmp_path,
                                                                 tiny_random_model):
    out = tmp_path / "out"
    proc = torchrun("exp/00-sample.py", "--config",
                    str(sample_config(write_config, out, tiny_random_model)), nproc=1)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "progress.jsonl").is_file() and (out / "results.json").is_file()


def dist_config(write_config, tmp_path, model: str, out: Path) -> Path:
    """00 (done once, shared) and a 01 section writing to `out`."""
    zero = tmp_path / "00"
    config = write_config({"defaults": {"model": model}, "00_sample": {
        "dataset": {"num_examples": 5}, "num_samples": 3, "output_dir": str(zero),
        "sampling": {"max_new_tokens": 24, "temperature": 0.8, "top_p": 0.9},
        "task": {"reward_workers": 1}},
        "01_dist": {"input": str(zero), "output_dir": str(out), "top_k": 5}},
        name=f"{out.name}.yaml")
    if not (zero / "results.json").is_file():
        from rl_onoff.config import load_config
        from rl_onoff.sample.run import run_sample
        run_sample(load_config(config, section="00_sample"))
    return config


def same_distributions(a: Path, b: Path) -> None:
    import numpy as np

    from rl_onoff.distributions import load_distributions

    x, y = load_distributions(a), load_distributions(b)
    assert x.questions == y.questions
    assert x.meta["summary"].keys() == y.meta["summary"].keys()
    assert x.meta["token_strings"] == y.meta["token_strings"]
    for name in x.names:
        assert np.array_equal(x.array(name), y.array(name)), name
    assert sorted(p.name for p in b.iterdir() if p.name.startswith("shard")) == []


def test_01_on_two_processes_and_on_two_nodes_equals_one(write_config, tmp_path,
                                                         tiny_random_model):
    from rl_onoff.config import load_config
    from rl_onoff.distributions import run_dist

    one, two, nodes = tmp_path / "one", tmp_path / "two", tmp_path / "nodes"
    run_dist(load_config(dist_config(write_config, tmp_path, tiny_random_model, one),
                         section="01_dist"))
    proc = torchrun("exp/01-dist.py", "--config",
                    str(dist_config(write_config, tmp_path, tiny_random_model, two)))
    assert proc.returncode == 0, proc.stderr[-3000:]
    same_distributions(one, two)
    # two "nodes" on this machine: two torchrun commands meeting at one rendezvous endpoint
    config = dist_config(write_config, tmp_path, tiny_random_model, nodes)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    port = 29400 + os.getpid() % 500
    node = [[*TORCHRUN, "--nnodes=2", f"--node-rank={rank}", "--nproc-per-node=1",
             "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{port}", "--rdzv-id=nodes",
             "exp/01-dist.py", "--config", str(config)] for rank in (0, 1)]
    procs = [subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) for cmd in node]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-3000:]
    same_distributions(one, nodes)


def test_04_on_two_processes_equals_one(write_config, tmp_path):
    """Texts split over two ranks: the same vectors, scores and texts.json as one process."""
    import numpy as np

    from rl_onoff.config import load_config
    from rl_onoff.proto.pipeline import run_proto

    texts = [" 19 + 6 = 25", " 7 * 3 = 21", " 52 - 8 = 44"]
    def config(out):
        return write_config({"04_proto": {
            "model": "tiny-arith", "texts": texts, "steps": 30, "lr": 0.05, "batch_size": 2,
            "control": False, "output_dir": str(out)}}, name=f"{out.name}.yaml")
    one, two = tmp_path / "one", tmp_path / "two"
    run_proto(load_config(config(one), section="04_proto"))
    proc = torchrun("exp/04-proto.py", "--config", str(config(two)))
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = [read(d, "texts.json") for d in (one, two)]
    assert [r["text"] for r in records[0]] == [r["text"] for r in records[1]] == texts
    for a, b in zip(*records):
        assert a["accuracy"] == b["accuracy"]
    with np.load(one / "proto.npz") as x, np.load(two / "proto.npz") as y:
        for name in ("e", "m"):
            np.testing.assert_allclose(x[name], y[name], atol=1e-5)


def test_03_on_two_processes_equals_one(write_config, tmp_path):
    """Question groups split over two ranks: the same trees, samples and summary."""
    from rl_onoff.config import load_config
    from rl_onoff.search.run import run_tree_search

    def config(out):
        return write_config({"03_tree_search": {
            "dataset": {"num_examples": 4, "levels": [1, 2]}, "rollouts": 3,
            "sampling": {"max_new_tokens": 32}, "batch_size": 1, "seeds": [0],
            "max_pool_factor": 2, "bootstrap": 100, "output_dir": str(out)}},
            name=f"{out.name}.yaml")
    one, two = tmp_path / "one", tmp_path / "two"
    run_tree_search(load_config(config(one), section="03_tree_search"))
    proc = torchrun("exp/03-tree-search.py", "--config", str(config(two)))
    assert proc.returncode == 0, proc.stderr[-3000:]

    def without_time(value):
        if isinstance(value, dict):
            return {k: without_time(v) for k, v in value.items() if "seconds" not in k}
        if isinstance(value, list):
            return [without_time(v) for v in value]
        return value
    a, b = read(one, "results.json"), read(two, "results.json")
    assert without_time(a["models"]) == without_time(b["models"])
    assert without_time(read(one, "summary.json")) == without_time(read(two, "summary.json"))
    rollouts = [sorted(json.loads(line)["id"] for line in (d / "rollouts.jsonl").open())
                for d in (one, two)]
    assert rollouts[0] == rollouts[1] and not list(two.glob("rollouts.rank*"))
