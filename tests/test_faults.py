"""Bad input and interruptions: each case exits 2 (or 130 on Ctrl-C) with one line naming the
file or key and the fix, and loses or mixes nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from rl_onoff.config import REPO_ROOT

from test_sample import read, sample_config


def run_script(script: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, script, *args], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=timeout)


def one_line_error(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_a_mistyped_model_leaves_the_folder_free_for_the_corrected_config(
        write_config, tmp_path, tiny_random_model):
    out = tmp_path / "out"
    wrong = sample_config(write_config, out, str(tmp_path / "no-such-model"))
    one_line_error(run_script("exp/00-sample.py", "--config", str(wrong)), "no-such-model")
    assert not (out / "fingerprint.json").exists() and not (out / ".lock").exists()
    right = sample_config(write_config, out, tiny_random_model)
    assert run_script("exp/00-sample.py", "--config", str(right)).returncode == 0
    assert (out / "results.json").is_file()


def test_a_retrained_checkpoint_at_the_same_path_does_not_mix_into_a_resumed_run(
        write_config, tmp_path, tiny_random_model):
    """The fingerprint covers the weights: same path, other weights -> refused."""
    import shutil

    model = tmp_path / "model"
    shutil.copytree(tiny_random_model, model)
    out = tmp_path / "out"
    config = sample_config(write_config, out, str(model))
    assert run_script("exp/00-sample.py", "--config", str(config)).returncode == 0
    weights = model / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1  # "retrained": one bit of the weights differs
    weights.write_bytes(bytes(data))
    proc = run_script("exp/00-sample.py", "--config", str(config))
    one_line_error(proc, "holds results of a different configuration", "model_identity",
                   "on_config_change")


def test_bad_dataset_files_name_the_file_and_the_fix(write_config, tmp_path, tiny_random_model):
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes(b'{"question": "caf\xe9?", "answer": "1"}\n')
    columns = tmp_path / "columns.jsonl"
    columns.write_text('{"q": "1 + 1?", "answer": "2"}\n')
    for path, fragments in ((latin, ["dataset.path", "not UTF-8"]),
                            (columns, ["00_sample.dataset", "no question field", "field_map"])):
        config = sample_config(write_config, tmp_path / "out", tiny_random_model,
                               dataset={"name": "files", "path": str(path)})
        one_line_error(run_script("exp/00-sample.py", "--config", str(config)), *fragments)


@pytest.mark.parametrize("damage, fragment", [
    (lambda text: text[: len(text) // 2], "not valid JSON"),
    (lambda text: json.dumps({**json.loads(text), "questions": [{"id": "x"}]}), "incomplete"),
    (lambda text: text.encode("utf-16").decode("latin-1"), "not"),
])
def test_a_damaged_results_file_stops_01_with_one_line(write_config, tmp_path, tiny_random_model,
                                                        damage, fragment):
    from rl_onoff.sample.results import load_results
    from rl_onoff.stage import StageError

    out = tmp_path / "out"
    assert run_script("exp/00-sample.py", "--config",
                      str(sample_config(write_config, out, tiny_random_model))).returncode == 0
    path = out / "results.json"
    path.write_text(damage(path.read_text()), encoding="utf-8")
    with pytest.raises(StageError, match=fragment):
        load_results(out, "01_dist.input")


def test_prompts_longer_than_the_context_are_an_error_or_skipped_and_counted(
        write_config, tmp_path, tiny_random_model):
    """tiny models have a 512-token context: a 600-word question cannot fit."""
    long_question = " ".join(["seven"] * 600) + " How many?"
    data = tmp_path / "long.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in [
        {"id": "short", "question": "Ann has 2 apples. She gets 3 more. How many?", "answer": "5"},
        {"id": "long", "question": long_question, "answer": "7"}]) + "\n")
    out = tmp_path / "out"
    config = sample_config(write_config, out, tiny_random_model,
                           dataset={"name": "files", "path": str(data)})
    proc = run_script("exp/00-sample.py", "--config", str(config))
    one_line_error(proc, "on_long_prompt", "1 prompt(s)", "context of 512")
    assert not (out / "progress.jsonl").exists()
    proc = run_script("exp/00-sample.py", "--config", str(config),
                      "--set", "00_sample.task.on_long_prompt=skip")
    assert proc.returncode == 0, proc.stderr
    assert "skipped 1 prompt" in proc.stdout
    assert [q["question"] for q in read(out, "results.json")["questions"]] == [
        "Ann has 2 apples. She gets 3 more. How many?"]


def test_non_finite_settings_stop_at_load(write_config, tmp_path):
    config = write_config({})
    for key in ("00_sample.sampling.temperature=.nan", "00_sample.sampling.top_p=.inf"):
        one_line_error(run_script("exp/00-sample.py", "--config", str(config), "--set", key),
                       key.split("=")[0], "finite")


def test_ctrl_c_prints_one_line_and_the_rerun_resumes(write_config, tmp_path, tiny_random_model):
    out = tmp_path / "out"
    # 48 batches: the progress file lags generation by the scoring pool, so the job must be
    # long enough to be still running when its first lines appear
    config = sample_config(write_config, out, tiny_random_model, max_new_tokens=48,
                           batch_size=4, num_samples=32)
    # SIGINT back to its default in the child: a test run started in the background
    # (`python -m pytest &` in a script) ignores SIGINT, its children inherit that, and Python
    # then never raises KeyboardInterrupt (the job ran to the end with exit 0)
    proc = subprocess.Popen([sys.executable, "exp/00-sample.py", "--config", str(config)],
                            cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    progress = out / "progress.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if progress.is_file() and progress.read_text().count("\n") >= 4:
            break
        time.sleep(0.01)
    assert proc.poll() is None, "00 ended before it could be interrupted (a longer job is needed)"
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, (proc.returncode, stderr[-2000:])
    assert "interrupted; rerun the same command to resume" in stderr
    assert "Traceback" not in stderr
    assert not (out / ".lock").exists()
    assert run_script("exp/00-sample.py", "--config", str(config)).returncode == 0
    assert len(read(out, "results.json")["questions"]) == 6


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_output_folder_is_one_line(write_config, tmp_path, tiny_random_model):
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o500)
    try:
        one_line_error(run_script("exp/00-sample.py", "--config",
                                  str(sample_config(write_config, out, tiny_random_model))),
                       "permission")
    finally:
        out.chmod(0o700)


def test_a_full_disk_is_one_line(monkeypatch, capsys):
    """ENOSPC anywhere in a run: one line naming the file and what to do."""
    import errno

    from rl_onoff import cli

    def fill_the_disk(config):
        raise OSError(errno.ENOSPC, "No space left on device", "/data/out/results.json")

    with pytest.raises(SystemExit) as info:
        cli.main("test", fill_the_disk, ["--config", str(REPO_ROOT / "experiment_config.yaml")],
                 section="00_sample")
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "disk is full writing /data/out/results.json" in err


def test_runs_list_skips_a_corrupt_record(tmp_path, capsys):
    from rl_onoff import runs

    good = tmp_path / "00-sample" / "ok_1"
    good.mkdir(parents=True)
    (good / "run.json").write_text(json.dumps({"script": "00-sample", "name": "ok",
                                               "status": "finished", "started_at":
                                               "2026-01-01T00:00:00+00:00"}))
    bad = tmp_path / "00-sample" / "bad_1"
    bad.mkdir()
    (bad / "run.json").write_text('{"script": "00-sa')
    assert runs.main(["list", "--root", str(tmp_path)]) in (0, None)
    captured = capsys.readouterr()
    assert "ok_1" in captured.out and "bad_1" not in captured.out
    assert f"skipped {bad / 'run.json'}" in captured.err



def test_01_and_04_refuse_to_overwrite_another_configurations_results(write_config, tmp_path,
                                                                       tiny_random_model):
    """A changed setting never overwrites silently; with overwrite, the record matches the data."""
    from rl_onoff.config import load_config
    from rl_onoff.distributions import load_distributions, run_dist
    from rl_onoff.proto.pipeline import run_proto
    from rl_onoff.stage import StageError

    from test_parallel import dist_config

    out = tmp_path / "01"
    config = dist_config(write_config, tmp_path, tiny_random_model, out)
    run_dist(load_config(config, section="01_dist"))
    before = (out / "distributions.npz").read_bytes()
    with pytest.raises(StageError, match="top_k: 5 -> 7.*on_config_change"):
        run_dist(load_config(config, ["01_dist.top_k=7"], section="01_dist"))
    assert (out / "distributions.npz").read_bytes() == before
    run_dist(load_config(config, ["01_dist.top_k=7", "01_dist.on_config_change=overwrite"],
                         section="01_dist"))
    assert load_distributions(out).array("topk_ids").shape[1] == 7
    assert read(out, "run_config.json")["config"]["01_dist"]["top_k"] == 7

    proto = tmp_path / "04"
    section = {"model": tiny_random_model, "texts": [" 3 + 4 = 7"], "steps": 5,
               "control": False, "output_dir": str(proto)}
    run_proto(load_config(write_config({"04_proto": section}, name="p.yaml"), section="04_proto"))
    with pytest.raises(StageError, match="lr: 0.01 -> 0.05"):
        run_proto(load_config(write_config({"04_proto": {**section, "lr": 0.05}}, name="q.yaml"),
                              section="04_proto"))
    assert read(proto, "run_config.json")["config"]["04_proto"]["lr"] == 0.01
