"""`--sweep` (rl_onoff.sweep through rl_onoff.cli.main): the grid, folders, group, resume,
and a real 00-sample sweep laid out by `runs compare --group`. Most tests run a stand-in
stage on the real frame (lock, fingerprint, run record; no model), so they take a second."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from rl_onoff import runs, sweep
from rl_onoff.cli import main
from rl_onoff.config import REPO_ROOT, ConfigError
from rl_onoff.stage import Stage, StageError

SECTION = "00_sample"


def stand_in(config, calls: list | None = None, fail_at: float | None = None) -> None:
    """A stage on the real frame whose summary is a known function of its settings."""
    cfg = config[SECTION]
    with Stage("00-sample", SECTION, config) as stage:
        out = stage.claim()
        if calls is not None:
            calls.append((cfg.sampling.temperature, cfg.seed, out))
        if cfg.sampling.temperature == fail_at:
            raise StageError(f"planted failure at temperature {fail_at}")
        stage.finish({"avg@n": cfg.sampling.temperature / 10 + cfg.seed})


@pytest.fixture
def config(write_config, tmp_path) -> Path:
    return write_config({SECTION: {"output_dir": str(tmp_path / "out")}})


def sweep_cli(config: Path, *args: str, calls: list | None = None, fail_at=None) -> None:
    main("test", lambda c: stand_in(c, calls, fail_at), ["--config", str(config), *args],
         section=SECTION)


def records(tmp_path: Path) -> list[runs.Record]:
    return runs.Catalog.scan([tmp_path / "runs"]).records


def test_values_split_at_top_level_commas_only():
    assert sweep.split_values("0.6, 1.0") == ["0.6", "1.0"]
    assert sweep.split_values("[1, 2],[3],{a: 1, b: 2}") == ["[1, 2]", "[3]", "{a: 1, b: 2}"]
    assert sweep.split_values("'a,b',c") == ["'a,b'", "c"]


@pytest.mark.parametrize("text, message", [
    ("00_sample.sampling.temperature", "expected section.key=V1,V2"),
    ("temperature=0.6,1.0", "expected section.key=V1,V2"),
    ("00_sample.sampling.temperature=0.6,,1.0", "an empty value"),
    ("00_sample.sampling.temperature=0.6,0.6", "listed twice"),
    ("00_sample.output_dir=a,b", "sets output_dir itself"),
    ("00_sample.tracking.group=a,b", "give --group instead"),
])
def test_bad_sweeps_are_refused_with_the_fix(text, message):
    with pytest.raises(ConfigError, match=message):
        sweep.parse_axis(text)


def test_the_grid_is_the_product_with_safe_distinct_folder_names():
    axes = [sweep.parse_axis("00_sample.sampling.temperature=0.6,1.0"),
            sweep.parse_axis("defaults.model=tiny-arith,Qwen/Qwen3-8B"),
            sweep.parse_axis("defaults.seed=0,1")]
    names = [c.name for c in sweep.grid(axes)]
    assert len(names) == 8 == len(set(names))
    assert names[:3] == ["temperature=0.6,model=tiny-arith,seed=0",
                         "temperature=0.6,model=tiny-arith,seed=1",
                         "temperature=0.6,model=Qwen_Qwen3-8B,seed=0"]
    same_leaf = [sweep.parse_axis("defaults.seed=0,1"), sweep.parse_axis("00_sample.seed=2,3")]
    assert sweep.grid(same_leaf)[0].name == "defaults.seed=0,00_sample.seed=2"
    long = sweep.grid([sweep.parse_axis(f"00_sample.task.system_prompt={'x' * 300},{'x' * 301}")])
    assert all(len(c.name) <= sweep.MAX_NAME for c in long) and long[0].name != long[1].name
    with pytest.raises(ConfigError, match="share the folder 'prefill=a_b'"):
        sweep.grid([sweep.parse_axis("00_sample.task.prefill=a/b,a:b")])
    with pytest.raises(ConfigError, match="swept twice"):
        sweep.grid([sweep.parse_axis("defaults.seed=0"), sweep.parse_axis("defaults.seed=1")])


def test_a_sweep_runs_every_combination_in_its_folder_and_one_group(config, tmp_path, capsys):
    calls = []
    sweep_cli(config, "--sweep", "00_sample.sampling.temperature=0.6,1.0",
              "--sweep", "defaults.seed=0,1", calls=calls)
    out = capsys.readouterr().out
    base = tmp_path / "out-sweep"
    assert [(t, s) for t, s, _ in calls] == [(0.6, 0), (0.6, 1), (1.0, 0), (1.0, 1)]
    assert [o for *_, o in calls] == [base / f"temperature={t},seed={s}"
                                      for t, s in ((0.6, 0), (0.6, 1), (1.0, 0), (1.0, 1))]
    found = records(tmp_path)
    groups = {json.loads((r.dir / "config.json").read_text())[SECTION]["tracking"]["group"]
              for r in found}
    assert len(found) == 4 and len(groups) == 1 and groups.pop().startswith("temperature+seed_")
    # the final table: one row per combination with the summary each run wrote
    rows = {tuple(line.split()[:2]): line.split() for line in out.splitlines()
            if line.startswith(("0.6 ", "1.0 "))}
    for (t, s), row in rows.items():
        assert row[2] == "finished" and float(row[4]) == pytest.approx(float(t) / 10 + int(s))
    assert len(rows) == 4


def test_every_combination_is_validated_before_any_runs(config, capsys):
    calls = []
    with pytest.raises(SystemExit) as exit_:
        sweep_cli(config, "--sweep", "00_sample.sampling.temperature=0.6,-1", calls=calls)
    assert exit_.value.code == 2 and calls == []
    err = capsys.readouterr().err
    assert "combination temperature=-1" in err and "00_sample.sampling.temperature: got -1" in err


def test_set_and_sweep_of_one_key_and_group_without_sweep_are_errors(config, capsys):
    for args in (["--set", "defaults.seed=1", "--sweep", "defaults.seed=0,1"], ["--group", "g"]):
        with pytest.raises(SystemExit) as exit_:
            sweep_cli(config, *args)
        assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "defaults.seed is given by --set and --sweep" in err
    assert "--group names a sweep's tracking group" in err


def test_a_failed_combination_does_not_stop_the_others_and_a_rerun_does_only_it(
        config, tmp_path, capsys):
    calls = []
    with pytest.raises(SystemExit) as exit_:
        sweep_cli(config, "--sweep", "00_sample.sampling.temperature=0.2,0.6,1.0", "--group", "g",
                  calls=calls, fail_at=0.6)
    assert exit_.value.code == 2 and [t for t, *_ in calls] == [0.2, 0.6, 1.0]
    assert "1 of 3 combinations failed (temperature=0.6)" in capsys.readouterr().err
    calls.clear()
    sweep_cli(config, "--sweep", "00_sample.sampling.temperature=0.2,0.6,1.0", "--group", "g",
              calls=calls)
    assert [t for t, *_ in calls] == [0.6]
    out = capsys.readouterr().out
    assert out.count("finished earlier") == 2 and "temperature=0.6: running" in out


def test_a_changed_setting_or_a_deleted_folder_runs_the_combination_again(config, tmp_path):
    calls = []
    sweep_cli(config, "--sweep", "00_sample.sampling.temperature=0.6,1.0", calls=calls)
    calls.clear()
    sweep_cli(config, "--sweep", "00_sample.sampling.temperature=0.6,1.0",
              "--set", "00_sample.num_samples=3", calls=calls)
    assert [t for t, *_ in calls] == [0.6, 1.0]      # num_samples changed: both again
    calls.clear()
    for path in (tmp_path / "out-sweep" / "temperature=1.0").iterdir():
        path.unlink()
    sweep_cli(config, "--sweep", "00_sample.sampling.temperature=0.6,1.0",
              "--set", "00_sample.num_samples=3", calls=calls)
    assert [t for t, *_ in calls] == [1.0]


CHILD = """
import sys, time
from rl_onoff.cli import main
from rl_onoff.stage import Stage

def run(config):
    cfg = config["00_sample"]
    with Stage("00-sample", "00_sample", config) as stage:
        stage.claim()
        if cfg.sampling.temperature == 1.0:
            print("hanging", flush=True)
            time.sleep(120)
        stage.finish({"avg@n": cfg.sampling.temperature / 10 + cfg.seed})

main("child", run, sys.argv[1:], section="00_sample")
"""


def test_a_killed_sweep_resumes_in_its_group(config, tmp_path, capsys):
    grid = ["--sweep", "00_sample.sampling.temperature=0.6,1.0,1.4"]
    child = subprocess.Popen([sys.executable, "-c", CHILD, "--config", str(config), *grid],
                             stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    try:
        assert any("hanging" in line for line in child.stdout)   # stops reading at the line
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
    (killed_group,) = {runs.group_of(r) for r in records(tmp_path)}
    assert sorted(r.status[0] for r in records(tmp_path)) == ["crashed", "finished"]

    calls = []
    sweep_cli(config, *grid, calls=calls)
    assert [t for t, *_ in calls] == [1.0, 1.4]           # 0.6 had finished
    assert f"in group {killed_group}" in capsys.readouterr().out
    assert {runs.group_of(r) for r in records(tmp_path)} == {killed_group}

    runs.main(["compare", "--root", str(tmp_path / "runs"), "--group", killed_group])
    out = capsys.readouterr().out
    assert "3 00-sample runs; 1 other attempts not shown" in out
    table = [line.split() for line in out.splitlines() if line[:3] in ("0.6", "1.0", "1.4")]
    assert [row[:2] for row in table] == [["0.6", "finished"], ["1.0", "finished"],
                                          ["1.4", "finished"]]
    assert [float(row[3]) for row in table] == pytest.approx([0.06, 0.10, 0.14])


def mean_reward(results: Path) -> float:
    """avg@n straight from results.json: the mean reward over every sample."""
    rewards = [s["reward"] for q in json.loads(results.read_text())["questions"]
               for s in q["samples"]]
    return sum(rewards) / len(rewards)


def test_a_real_00_sample_sweep_is_compared_side_by_side(write_config, tmp_path, capsys):
    """The issue's command on tiny-arith, small: two runs, one group, listed side by side;
    each combination's samples are those of a plain run with the same --set."""
    from rl_onoff.sample.run import run_sample

    section = {"dataset": {"num_examples": 4}, "num_samples": 2, "batch_size": 8,
               "sampling": {"max_new_tokens": 24}, "task": {"reward_workers": 1},
               "output_dir": str(tmp_path / "out")}
    config = write_config({SECTION: section})
    main("00", run_sample, ["--config", str(config),
                            "--sweep", "00_sample.sampling.temperature=0.6,1.0"], section=SECTION)
    out = capsys.readouterr().out
    group = out.split("in group ")[1].split(",")[0]
    main("00", run_sample, ["--config", str(config), "--set", "00_sample.sampling.temperature=0.6",
                            "--set", f"00_sample.output_dir={tmp_path / 'plain'}"],
         section=SECTION)
    swept = json.loads((tmp_path / "out-sweep" / "temperature=0.6" / "results.json").read_text())
    plain = json.loads((tmp_path / "plain" / "results.json").read_text())
    assert [s["token_ids"] for q in swept["questions"] for s in q["samples"]] == \
        [s["token_ids"] for q in plain["questions"] for s in q["samples"]]
    capsys.readouterr()

    runs.main(["compare", "--root", str(tmp_path / "runs"), "--group", group])
    out = capsys.readouterr().out
    header = next(line.split() for line in out.splitlines() if line.startswith("temperature"))
    assert header[:3] == ["temperature", "status", "run"] and "avg@n" in header
    rows = [line.split() for line in out.splitlines() if line.startswith(("0.6 ", "1.0 "))]
    assert [row[:2] for row in rows] == [["0.6", "finished"], ["1.0", "finished"]]
    for row, value in zip(rows, ("0.6", "1.0")):
        expected = mean_reward(tmp_path / "out-sweep" / f"temperature={value}" / "results.json")
        assert float(row[header.index("avg@n")]) == pytest.approx(expected, abs=5e-5)
