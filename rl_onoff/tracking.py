"""One way to write a run: its record directory, metric stream and summary.

Every script opens a run with `start_run`. The run's record lives in
`<tracking.root>/<script>/<name>_<timestamp>/` and holds

    run.json        name, script, model, status (running/finished/failed/interrupted),
                    times, host, pid, heartbeat, error
    config.json     the resolved configuration of the whole YAML
    env.json        versions, device, git commit, seed
    metrics.jsonl   one line per logged step: {"step", "time", ...metrics}
    summary.json    the final metrics
    tables/         tables a script logged (`Run.log_table`), one JSON file each

Re-running never overwrites an earlier record (timestamps, plus a suffix on a
clash). A killed process cannot write its own status, so a reader asks
`live_status`, which checks the process (same host) or the heartbeat (another
host). With `tracking.wandb: true` the same stream is mirrored to Weights &
Biases (offline mode works: WANDB_MODE=offline).
"""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from rl_onoff import io
from rl_onoff.config import REPO_ROOT

HEARTBEAT_S = 30        # run.json's heartbeat is refreshed by `log` at most this often
STALE_AFTER_S = 3600    # a run on another host silent for longer is reported "stale"
PACKAGES = ("rl_onoff", "torch", "transformers", "datasets", "numpy", "math-verify",
            "streamlit", "tokenizers", "wandb")


def package_versions() -> dict[str, str | None]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    if versions["rl_onoff"] is None:
        import rl_onoff
        versions["rl_onoff"] = rl_onoff.__version__
    return versions


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"],
                             capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def environment(seed: int | None = None) -> dict[str, Any]:
    """What a result depends on besides its config: software, hardware, commit, seed."""
    env = {"python": sys.version.split()[0], "platform": platform.platform(),
           "host": socket.gethostname(), "packages": package_versions(),
           "git_commit": git_commit(), "seed": seed, "cuda": None}
    if "torch" in sys.modules:
        import torch
        if torch.cuda.is_available():
            env["cuda"] = {"device": torch.cuda.get_device_name(), "version": torch.version.cuda}
    return env


def _now() -> str:
    """UTC, to the millisecond so that runs started in the same second still sort."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def process_start(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (Linux), to tell it from a later
    process that reused its pid; None where /proc does not say."""
    stat = _proc_stat(pid)
    return stat[1] if stat else None


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state letter, start time) of a process from /proc, or None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rfind(")") + 2:].split()  # after "pid (command name) "
    return fields[0], int(fields[19])


def _process_alive(pid: int, start: int | None) -> bool:
    """Whether `pid` still runs the process that started at `start`; a zombie (killed, not
    yet reaped by its parent) counts as gone."""
    if Path("/proc/self/stat").exists():
        stat = _proc_stat(pid)
        return stat is not None and stat[0] not in "ZX" and start in (None, stat[1])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        pass
    return True


def live_status(info: dict) -> tuple[str, str | None]:
    """A record's status as of now, and why when it differs from run.json's.

    run.json says "running" until its process finishes it; a SIGKILL or a power cut
    leaves that behind, so a running record whose process is gone (same host) is
    "crashed", and one whose host has been silent for STALE_AFTER_S is "stale"."""
    if info.get("status") != "running":
        return info.get("status", "unknown"), None
    if info.get("host") == socket.gethostname():
        if _process_alive(info["pid"], info.get("pid_start")):
            return "running", None
        return "crashed", f"process {info['pid']} on {info['host']} ended without finishing the run"
    beat = info.get("heartbeat") or info.get("started_at")
    silent = (datetime.now(timezone.utc) - datetime.fromisoformat(beat)).total_seconds()
    if silent > STALE_AFTER_S:
        return "stale", (f"no heartbeat from {info.get('host')} for {silent / 3600:.1f} h; "
                         "its process cannot be checked from this host")
    return "running", None


class Run:
    """An open run record. Use as a context manager: an exception marks it failed."""

    def __init__(self, script: str, name: str, root: Path, config: dict, seed: int | None,
                 tracking=None, output_dir: Path | None = None, model: str | None = None):
        self.script, self.name = script, name
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        base = Path(root) / script / f"{name}_{stamp}"
        self.dir, suffix = base, 1
        while self.dir.exists():
            suffix += 1
            self.dir = base.with_name(f"{base.name}-{suffix}")
        self.dir.mkdir(parents=True)
        self.start, now = time.time(), _now()
        self.info = {"script": script, "name": name, "model": model, "status": "running",
                     "started_at": now, "finished_at": None, "heartbeat": now,
                     "pid": os.getpid(), "pid_start": process_start(os.getpid()),
                     "host": socket.gethostname(),
                     "output_dir": str(output_dir) if output_dir else None, "error": None}
        self.environment = environment(seed)
        io.write_json(self.dir / "run.json", self.info)
        io.write_json(self.dir / "config.json", config)
        io.write_json(self.dir / "env.json", self.environment)
        self._wandb = _start_wandb(tracking, name, config, self.dir, model) if tracking else None
        self._step = 0
        self._beat = time.time()

    def log(self, metrics: dict, step: int | None = None) -> None:
        """Append one step of metrics (numbers or short strings)."""
        self._step = self._step + 1 if step is None else step
        record = {"step": self._step, "time": round(time.time() - self.start, 3), **metrics}
        io.append_jsonl(self.dir / "metrics.jsonl", record)
        if time.time() - self._beat >= HEARTBEAT_S:
            self._beat = time.time()
            self.info["heartbeat"] = _now()
            io.write_json(self.dir / "run.json", self.info)
        if self._wandb is not None:
            self._wandb.log(metrics, step=self._step)

    def log_image(self, name: str, path: Path) -> None:
        """Record a plot the script wrote (and upload it to W&B when mirroring)."""
        images = self.info.setdefault("images", {})
        images[name] = str(path)
        io.write_json(self.dir / "run.json", self.info)
        if self._wandb is not None:
            import wandb
            self._wandb.log({name: wandb.Image(str(path))}, step=self._step)

    def log_table(self, name: str, columns: list[str], rows: list[list]) -> None:
        """Record a small table (e.g. accuracy per level) as tables/<name>.json and in W&B."""
        io.write_json(self.dir / "tables" / f"{name}.json", {"columns": columns, "rows": rows})
        if self._wandb is not None:
            import wandb
            self._wandb.log({name: wandb.Table(columns=columns, data=rows)}, step=self._step)

    def finish(self, summary: dict | None = None, status: str = "finished",
               error: str | None = None) -> None:
        if summary is not None:
            io.write_json(self.dir / "summary.json", summary)
            if self._wandb is not None:
                self._wandb.summary.update(_flat_numbers(summary))
        self.info.update(status=status, finished_at=_now(), error=error,
                         seconds=round(time.time() - self.start, 3))
        io.write_json(self.dir / "run.json", self.info)
        if self._wandb is not None:
            self._wandb.finish(exit_code=0 if status == "finished" else 1)
            self._wandb = None

    def __enter__(self) -> "Run":
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if self.info["status"] != "running":
            return False
        if exc_type is None:
            self.finish()
        elif issubclass(exc_type, KeyboardInterrupt):
            self.finish(status="interrupted", error="KeyboardInterrupt")
        else:
            self.finish(status="failed", error=f"{exc_type.__name__}: {exc}")
        return False


def flatten(data: dict, sep: str = ".", prefix: str = "") -> dict:
    """Nested mappings as one level with joined keys: {"pass@k": {"1": x}} -> {"pass@k.1": x}."""
    out = {}
    for key, value in data.items():
        if isinstance(value, dict) and value:
            out.update(flatten(value, sep, f"{prefix}{key}{sep}"))
        else:
            out[f"{prefix}{key}"] = value
    return out


def is_number(value) -> bool:
    """A metric value: an int or float, but not a bool (which Python counts as an int)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _flat_numbers(data: dict) -> dict:
    return {k: v for k, v in flatten(data, "/").items() if is_number(v)}


def _start_wandb(tracking, name: str, config: dict, run_dir: Path, model: str | None):
    if not tracking.wandb:
        return None
    try:
        import wandb
    except ImportError as err:
        raise RuntimeError("tracking.wandb is true but the wandb package is not installed: "
                           "`pip install wandb`, or set tracking.wandb: false") from err
    if model:  # W&B has no API for a run's colour: record ours so charts can group by it
        from rl_onoff.colors import color_for
        config = {**config, "model_color": color_for(model)}
    return wandb.init(project=tracking.wandb_project, entity=tracking.wandb_entity, name=name,
                      tags=list(tracking.tags), group=tracking.group, config=config,
                      dir=str(run_dir), reinit="finish_previous")


def run_name(section, script: str) -> str:
    """The configured name, or `<model>` made filesystem-safe."""
    if section.tracking.name:
        return section.tracking.name
    return Path(section.model.rstrip("/")).name.replace(" ", "_") or script


def start_run(script: str, config, section_name: str, output_dir: Path | None = None,
              world_size: int = 1) -> Run:
    """Open the run record for `script` using the section's tracking settings."""
    section = config[section_name]
    run = Run(script, run_name(section, script), config.resolve(section.tracking.root),
              config.to_dict(), section.seed, tracking=section.tracking, output_dir=output_dir,
              model=section.model)
    run.info["world_size"] = world_size
    return run


class NullRun:
    """What ranks other than 0 log to under torchrun: nothing (rank 0 keeps the record)."""

    def __enter__(self) -> "NullRun":
        return self

    def __exit__(self, *exc_info) -> bool:
        return False

    def log(self, *args, **kwargs) -> None:
        pass

    log_image = log_table = finish = log


def write_provenance(output_dir: Path, config, section_name: str, run: Run | None = None,
                     model_info: dict | None = None) -> None:
    """Put the resolved config, environment, model and seed next to a stage's outputs."""
    section = config[section_name]
    io.write_json(Path(output_dir) / "run_config.json", {
        "section": section_name, "config": config.to_dict(), "model": model_info,
        "seed": section.seed, "environment": run.environment if run else environment(section.seed),
        "run_dir": str(run.dir) if run else None, "written_at": _now()})
