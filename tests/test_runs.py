"""Run records through `python -m rl_onoff.runs`: list, show, compare, best, export,
crash detection, the W&B offline mirror and model colours. Runs are made with
`tracking.Run` directly (no model), with summaries shaped like 00-sample's."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

from rl_onoff import runs, tracking
from rl_onoff.colors import PALETTE, color_for
from rl_onoff.config import REPO_ROOT, TrackingConfig
from rl_onoff.runs import main


def sample_summary(acc: float) -> dict:
    """What 00-sample's statistics.json looks like, in small."""
    return {"questions": 10, "n": 4, "avg@n": acc,
            "pass@k": {"1": acc, "2": min(1.0, acc + 0.2), "4": min(1.0, acc + 0.3)},
            "maj@n": acc + 0.05, "by_level": {"1": {"avg@n": acc}, "2": {"avg@n": acc / 2}},
            "tokens_per_s": 500.0, "model": {"name": "tiny-arith", "parameters": 10}, "seed": 0}


def make_run(root: Path, temperature: float, acc: float, model: str = "tiny-arith",
             steps: int = 3, tracking_config: TrackingConfig | None = None) -> Path:
    section = {"model": model, "temperature": temperature, "num_samples": 4}
    config = {"defaults": {"model": model, "seed": 0}, "00_sample": section, "01_dist": {"k": 1}}
    with tracking.Run("00-sample", model.split("/")[-1], root, config, 0,
                      tracking=tracking_config, model=model) as run:
        for i in range(steps):
            run.log({"batch": i, "batch_accuracy": acc + i / 100, "tokens_per_s": 100.0 + i})
        run.finish(summary=sample_summary(acc))
    return run.dir


@pytest.fixture
def cli(tmp_path, capsys):
    """Run the CLI over tmp_path's records; return its stdout."""
    def run(command: str, *args: str) -> str:
        main([command, "--root", str(tmp_path), *args])
        return capsys.readouterr().out
    return run


@pytest.fixture
def two_temperatures(tmp_path):
    return make_run(tmp_path, 1.0, 0.25), make_run(tmp_path, 0.6, 0.5)


def line_with(text: str, start: str) -> str:
    return next(line for line in text.splitlines() if line.startswith(start))


def test_list_shows_runs_oldest_first_with_key_metrics(cli, two_temperatures):
    out = cli("list")
    header, *rows = out.splitlines()
    assert header.split() == ["script", "run", "started", "status", "model", "avg@n", "pass@k.1",
                              "maj@n"]
    assert [row.split()[1] for row in rows] == [d.name for d in two_temperatures]
    assert all("finished" in row and "tiny-arith" in row for row in rows)
    assert "0.2500" in rows[0] and "0.5000" in rows[1]


def test_compare_shows_config_differences_and_accuracy_of_each(cli, two_temperatures, tmp_path):
    first, second = two_temperatures
    out = cli("compare", first.name, second.name)
    assert line_with(out, "00_sample.temperature").split()[1:] == ["1.0", "0.6"]
    assert "num_samples" not in out and "01_dist" not in out  # equal, or another script's section
    assert line_with(out, "avg@n").split()[1:] == ["0.2500", "0.5000"]
    assert line_with(out, "pass@k.1").split()[1:] == ["0.2500", "0.5000"]
    assert "by_level" not in out and "\nmodel" not in out  # breakdowns and run metadata: on request
    assert cli("compare") == "(no RUN given: the newest 2 00-sample runs)\n\n" + out

    png = tmp_path / "plots" / "accuracy.png"
    out = cli("compare", first.name, second.name, "--metric", "batch_accuracy", "--plot", str(png))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"wrote {png}" in out


def test_compare_metric_patterns_select_and_unknown_ones_fail(cli, two_temperatures, capsys):
    names = [d.name for d in two_temperatures]
    out = cli("compare", *names, "--metric", "pass@k.*", "--metric", "by_level.*")
    assert "pass@k.4" in out and "by_level.2.avg@n" in out and "maj@n" not in out
    with pytest.raises(SystemExit) as exit_:
        cli("compare", *names, "--metric", "accuracy")
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "no metric matches 'accuracy'" in err and "avg@n" in err and "batch_accuracy" in err


def test_best_ranks_by_a_summary_metric(cli, two_temperatures, capsys):
    low, high = two_temperatures
    assert f"00-sample/{high.name} = 0.5000" in cli("best", "--metric", "avg@n")
    assert f"00-sample/{low.name} = 0.2500" in cli("best", "--metric", "pass@k.1", "--min")
    with pytest.raises(SystemExit) as exit_:
        cli("best", "--metric", "accuracy")
    assert exit_.value.code == 2
    assert "no run has the summary metric 'accuracy'" in capsys.readouterr().err


def test_export_writes_the_step_metrics_as_csv(cli, two_temperatures, tmp_path):
    path = tmp_path / "out.csv"
    cli("export", two_temperatures[1].name, "--csv", str(path))
    rows = list(csv.DictReader(path.open()))
    assert list(rows[0]) == ["step", "time", "batch", "batch_accuracy", "tokens_per_s"]
    assert [float(r["batch_accuracy"]) for r in rows] == [0.5, 0.51, 0.52]
    assert cli("export", two_temperatures[1].name, "--csv", "-") == path.read_text()


def test_runs_are_found_by_path_prefix_or_substring_and_ambiguity_fails(cli, tmp_path, capsys):
    tiny = make_run(tmp_path, 1.0, 0.25)
    qwen = make_run(tmp_path, 1.0, 0.75, model="Qwen/Qwen2.5-Math-1.5B")
    assert str(qwen) in cli("show", "Qwen")
    assert str(tiny) in cli("show", str(tiny))
    assert str(tiny) in cli("show", "arith_")
    make_run(tmp_path, 0.6, 0.5)
    with pytest.raises(SystemExit) as exit_:
        cli("show", "tiny")
    assert exit_.value.code == 2
    assert "'tiny' matches 2 runs" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli("show", "llama")
    assert "no run matches 'llama'" in capsys.readouterr().err


CHILD = """
import sys, time
from rl_onoff.tracking import Run
run = Run("00-sample", "doomed", sys.argv[1], {"00_sample": {"temperature": 0.7}}, 0, model="m")
for i in range(3):
    run.log({"batch_accuracy": i / 4})
print(run.dir, flush=True)
time.sleep(120)
"""


def test_a_killed_run_is_reported_crashed_with_what_it_logged(cli, tmp_path):
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path)], stdout=subprocess.PIPE,
                             text=True, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    try:
        run_dir = Path(child.stdout.readline().strip())
        assert "running" in cli("list")
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
    assert json.loads((run_dir / "run.json").read_text())["status"] == "running"
    assert line_with(cli("list"), "00-sample").split()[4] == "crashed"
    out = cli("show", "doomed")
    assert f"crashed (process {child.pid} on" in out
    assert "steps: 3 logged; the last is step 3" in out
    assert line_with(out, "batch_accuracy").split()[1:] == ["0.5000", "0.0000", "0.5000"]


def test_an_exception_marks_the_run_failed(cli, tmp_path):
    with pytest.raises(ZeroDivisionError):
        with tracking.Run("00-sample", "broken", tmp_path, {}, 0) as run:
            run.log({"x": 1})
            1 / 0
    out = cli("show", "broken")
    assert line_with(out, "status").split()[1] == "failed"
    assert "ZeroDivisionError: division by zero" in out


def test_heartbeat_and_runs_on_another_host(tmp_path, monkeypatch):
    run = tracking.Run("00-sample", "beating", tmp_path, {}, 0)
    monkeypatch.setattr(tracking, "HEARTBEAT_S", 0)
    monkeypatch.setattr(tracking, "_now", lambda: "2030-01-01T00:00:00.000+00:00")
    run.log({"x": 1})
    info = json.loads((run.dir / "run.json").read_text())
    assert info["heartbeat"] == "2030-01-01T00:00:00.000+00:00"
    assert tracking.live_status(info) == ("running", None)
    elsewhere = {**info, "host": "another-host", "heartbeat": "2020-01-01T00:00:00+00:00"}
    status, why = tracking.live_status(elsewhere)
    assert status == "stale" and "another-host" in why
    recent = datetime.now(timezone.utc).isoformat()
    assert tracking.live_status({**elsewhere, "heartbeat": recent}) == ("running", None)
    run.finish()


def test_wandb_offline_mirror_writes_its_files(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    for key, value in {"WANDB_MODE": "offline", "WANDB_SILENT": "true",
                       "WANDB_CONFIG_DIR": tmp_path / "wandb-config",
                       "WANDB_CACHE_DIR": tmp_path / "wandb-cache",
                       "WANDB_DATA_DIR": tmp_path / "wandb-data"}.items():
        monkeypatch.setenv(key, str(value))
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    figure = tmp_path / "curve.png"
    plt.figure(figsize=(2, 2))
    plt.plot([0, 1])
    plt.savefig(figure)
    plt.close()
    config = TrackingConfig(root=str(tmp_path), wandb=True, tags=["test"], group="g")
    with tracking.Run("00-sample", "mirrored", tmp_path / "runs", {"00_sample": {"t": 1}}, 0,
                      tracking=config, model="tiny-arith") as run:
        run.log({"batch_accuracy": 0.5})
        run.log_image("curve", figure)
        run.log_table("by_level", ["level", "avg@n"], [[1, 0.5], [2, 0.25]])
        assert run._wandb.config["model_color"] == color_for("tiny-arith")
        run.finish(summary=sample_summary(0.5))
    (offline,) = (run.dir / "wandb").glob("offline-run-*")
    assert list(offline.glob("run-*.wandb"))  # the stream `wandb sync` uploads (written async)
    assert list(offline.glob("files/media/images/curve_*.png"))
    assert list(offline.glob("files/media/table/by_level_*.table.json"))
    assert json.loads((run.dir / "tables" / "by_level.json").read_text())["rows"][1] == [2, 0.25]


def test_model_colours_are_stable_and_ignore_where_the_model_came_from():
    name = "Qwen/Qwen2.5-Math-1.5B"
    other_process = subprocess.run(
        [sys.executable, "-c", f"from rl_onoff.colors import color_for; print(color_for({name!r}))"],
        capture_output=True, text=True, check=True, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert other_process.stdout.strip() == color_for(name) in PALETTE
    assert color_for("/models/Qwen2.5-Math-1.5B/") == color_for(name)
    assert len({color_for(f"model-{i}") for i in range(30)}) > 3


def make_group_run(root: Path, group: str, temperature: float, model: str, acc: float,
                   status: str = "finished") -> Path:
    """A run of a sweep: its section holds the swept values and the group, as 00's would."""
    section = {"model": model, "sampling": {"temperature": temperature}, "num_samples": 4,
               "output_dir": f"out-sweep/t={temperature},m={model}",
               "tracking": {"group": group, "name": None}}
    summary = {**sample_summary(acc), "ci95": {"avg@n": {"lo": acc - 0.1, "hi": acc + 0.05}}}
    run = tracking.Run("00-sample", model.split("/")[-1], root, {"defaults": {"model": "tiny-arith"},
                                                  "00_sample": section}, 0, model=model)
    run.finish(summary=summary if status == "finished" else None, status=status)
    return run.dir


@pytest.fixture
def sweep_group(tmp_path):
    """temperature x model; one point failed then finished, another finished then failed;
    another group."""
    make_group_run(tmp_path, "g1", 1.0, "tiny-arith", 0.0, status="failed")
    for temperature, model, acc in ((1.0, "tiny-arith", 0.2), (0.6, "tiny-arith", 0.4),
                                    (1.0, "Qwen/Qwen3-8B", 0.7), (0.6, "Qwen/Qwen3-8B", 0.9)):
        make_group_run(tmp_path, "g1", temperature, model, acc)
    make_group_run(tmp_path, "g1", 0.6, "tiny-arith", 0.0, status="failed")
    make_group_run(tmp_path, "g2", 0.3, "tiny-arith", 0.1)


def test_short_labels_keep_just_enough_of_the_key():
    assert runs.short_labels(["00_sample.sampling.temperature", "defaults.model"]) == \
        ["temperature", "model"]
    assert runs.short_labels(["defaults.seed", "00_sample.seed", "00_sample.task.format"]) == \
        ["defaults.seed", "00_sample.seed", "task.format"]


def test_compare_group_lays_out_the_grid_with_the_swept_keys_as_columns(cli, sweep_group):
    out = cli("compare", "--group", "g1")
    assert "group g1: 4 00-sample runs; 2 other attempts not shown" in out
    lines = out.splitlines()
    header = next(line.split() for line in lines if line.startswith("model"))
    assert header == ["model", "temperature", "status", "run", "avg@n", "pass@k.1", "maj@n"]
    rows = [line.split() for line in lines if line.startswith(("Qwen", "tiny"))]
    # the keys in the config's order, sorted by their values; at (tiny-arith, 1.0) and
    # (tiny-arith, 0.6) the finished attempt is shown, not the failed one before or after it
    assert [(r[0], r[1], r[2], r[4]) for r in rows] == [
        ("Qwen/Qwen3-8B", "0.6", "finished", "0.9000"), ("Qwen/Qwen3-8B", "1.0", "finished", "0.7000"),
        ("tiny-arith", "0.6", "finished", "0.4000"), ("tiny-arith", "1.0", "finished", "0.2000")]
    assert "0.3" not in out   # the other group's run


def test_compare_group_plots_a_metric_against_a_swept_value(cli, sweep_group, tmp_path):
    png = tmp_path / "grid.png"
    out = cli("compare", "--group", "g1", "--metric", "avg@n", "--plot", str(png))
    assert f"wrote {png} (avg@n against temperature)" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out = cli("compare", "--group", "g1", "--metric", "avg@n", "--plot", str(png), "--x", "model")
    assert "against model" in out


def test_group_plot_lines_hold_each_combinations_values(sweep_group, tmp_path, monkeypatch):
    """The data handed to matplotlib: x = temperature, one line per model, bars = ci95."""
    import matplotlib.axes
    drawn = []
    monkeypatch.setattr(matplotlib.axes.Axes, "errorbar",
                        lambda self, xs, ys, yerr, label, **kw: drawn.append((label, xs, ys, yerr)))
    grid = runs.group_grid(runs.Catalog.scan([tmp_path]).of_group("g1"))
    runs.plot_grid(grid, runs.grid_axis(grid, None), ["avg@n"], tmp_path / "p.png", "t")
    by_model = {label: (xs, ys, yerr) for label, xs, ys, yerr in drawn}
    assert by_model["model=Qwen/Qwen3-8B"][:2] == ([0.6, 1.0], [0.9, 0.7])
    assert by_model["model=tiny-arith"][:2] == ([0.6, 1.0], [0.4, 0.2])
    low, high = by_model["model=tiny-arith"][2]
    assert low == pytest.approx([0.1, 0.1]) and high == pytest.approx([0.05, 0.05])


def test_compare_group_errors_name_the_fix(cli, sweep_group, capsys):
    for args, message in ((["--group", "nope"], "no runs in group 'nope'"),
                          (["--group", "g1", "--plot", "x.png", "--x", "seed"],
                           "--x seed: not a swept key of the group; swept: model, temperature"),
                          (["some-run", "--group", "g1"], "give RUNs or --group, not both"),
                          (["--x", "temperature"], "--x temperature: allowed without --group")):
        with pytest.raises(SystemExit) as exit_:
            cli("compare", *args)
        assert exit_.value.code == 2
        err = capsys.readouterr().err
        assert message in err
        if "nope" in args:
            assert "groups: g1, g2" in err
