"""The one frame every stage runs in: its section, its output folder, its run record.

    with Stage("00-sample", "00_sample", config) as stage:
        model, tokenizer = stage.load_model()
        records = stage.load_dataset()
        out = stage.claim()              # fingerprint checked against what the folder holds
        ...
        stage.finish(summary)            # run_config.json beside the data, run record closed

The output folder is owned by one run at a time (a lock file naming the owner's pid and
host; a lock whose process is gone is taken over). Its fingerprint (the section's
settings that change results, plus the model's identity: hub commit or a hash of a local
checkpoint) is written only once the model and the dataset have loaded, so a mistyped
name never locks a folder against the corrected config. An earlier run's folder with
another fingerprint is refused, written beside (`new_dir`) or cleared (`overwrite`), as
`on_config_change` says. `run_config.json`, the record of what produced the data, is
written with the results, at the end.

Under torchrun (rl_onoff.distributed) rank 0 owns the folder, the run record and the
progress bar; every rank loads the model on its own device, works on its shard and
writes it; rank 0 merges.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import socket
from pathlib import Path
from typing import Any

from rl_onoff import io
from rl_onoff.config import Config, ConfigError

LOCK, FINGERPRINT, RUN_CONFIG = ".lock", "fingerprint.json", "run_config.json"
# Keys that never change results: where a run is recorded and what to do with old outputs.
NOT_FINGERPRINTED = ("tracking", "output_dir", "on_config_change")
HASHED_FILE_BYTES = 64 << 20  # larger checkpoint files are identified by size and mtime


class StageError(RuntimeError):
    """An expected failure (bad input file, busy folder): one line for the user, exit 2."""


# ---------------------------------------------------------------------------
# The output folder


def _lock_holder(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def acquire_lock(folder: Path) -> Path:
    """Create `folder/.lock` for this process; a live holder stops us with one line."""
    from rl_onoff.tracking import _process_alive, process_start

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK
    me = {"pid": os.getpid(), "pid_start": process_start(os.getpid()),
          "host": socket.gethostname()}
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _lock_holder(path)
            if holder and holder.get("host") != me["host"]:
                raise StageError(f"{folder} is in use by pid {holder.get('pid')} on "
                                 f"{holder.get('host')}; wait for it, or delete {path} if that "
                                 "run is gone")
            if holder and _process_alive(holder["pid"], holder.get("pid_start")):
                raise StageError(f"{folder} is in use by another run (pid {holder['pid']} on "
                                 f"{holder['host']}); wait for it or choose another output_dir")
            path.unlink(missing_ok=True)  # its process is gone (or the file is unreadable)
            continue
        with os.fdopen(fd, "w") as handle:
            json.dump(me, handle)
        return path
    raise StageError(f"could not lock {folder}: {path} keeps reappearing; another run is "
                     "starting there")


def release_lock(path: Path | None) -> None:
    if path is not None:
        holder = _lock_holder(path)
        if holder and holder.get("pid") == os.getpid():
            path.unlink(missing_ok=True)


def fingerprint_fields(section, model_identity: Any = None, extra: dict | None = None) -> dict:
    """What a folder's results depend on: the section less what never changes results."""
    skip = set(NOT_FINGERPRINTED) | set(getattr(section, "NOT_FINGERPRINTED", ()))
    fields = {k: v for k, v in dataclasses.asdict(section).items() if k not in skip}
    return {**fields, "model_identity": model_identity, **(extra or {})}


def fingerprint(fields: dict) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:16]


def differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return out


def clear_folder(folder: Path) -> None:
    """Delete an earlier run's outputs (everything but the lock)."""
    for entry in folder.iterdir():
        if entry.name == LOCK:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def model_identity(model, source: str) -> dict:
    """Which weights these are: the hub commit, or a hash of a local checkpoint's files (their
    content up to HASHED_FILE_BYTES, beyond that their size and modification time), so a
    retrained checkpoint at the same path never mixes into a resumed run."""
    commit = getattr(model.config, "_commit_hash", None)
    local = Path(source)
    if not local.is_dir():
        return {"hub_commit": commit}
    digest = hashlib.sha256()
    for path in sorted(p for p in local.rglob("*") if p.is_file()):
        stat = path.stat()
        digest.update(str(path.relative_to(local)).encode())
        if stat.st_size <= HASHED_FILE_BYTES:
            digest.update(path.read_bytes())
        else:
            digest.update(f"{stat.st_size}:{stat.st_mtime_ns}".encode())
    return {"local_files_sha256": digest.hexdigest()[:16]}


# ---------------------------------------------------------------------------
# The frame


class Stage:
    """A stage's run: lock its output folder, load what it needs, claim the folder for this
    configuration, record the run. Use as a context manager."""

    def __init__(self, script: str, section: str, config: Config, output: bool = True):
        from rl_onoff import distributed

        self.ranks = distributed.from_env()
        device = self.ranks.device(config[section].device, config[section].gpus_per_model)
        if device != config[section].device:
            config = config.replace(section, device=device)
        self.script, self.section, self.config = script, section, config
        self.cfg = config[section]
        self.out: Path | None = config.resolve(self.cfg.output_dir) if output else None
        self.model_info: dict | None = None
        self.models: dict[str, dict] = {}
        self.run = None
        self._lock: Path | None = None

    # -- context ----------------------------------------------------------
    def __enter__(self) -> "Stage":
        from rl_onoff import tracking

        if not self.ranks.main:
            self.run = tracking.NullRun()
            return self
        if self.out is not None:
            self._lock = acquire_lock(self.out)
        try:
            self.run = tracking.start_run(self.script, self.config, self.section,
                                          output_dir=self.out,
                                          world_size=self.ranks.world).__enter__()
        except BaseException:
            release_lock(self._lock)
            raise
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        try:
            self.run.__exit__(exc_type, exc, tb)
        finally:
            release_lock(self._lock)
        return False

    # -- loading ----------------------------------------------------------
    def load_model(self, name: str | None = None):
        """(model, tokenizer) of this section (or `name`), recorded for provenance."""
        from rl_onoff.models import describe, load_model, replica_gpus, resolve_source

        cfg = self.cfg
        name = name or cfg.model
        gpus = None
        if cfg.gpus_per_model > 1:
            import torch
            gpus = replica_gpus(self.ranks.local_rank, cfg.gpus_per_model,
                                torch.cuda.device_count())
        model, tokenizer = load_model(name, cfg.device, cfg.dtype, revision=cfg.revision,
                                      trust_remote_code=cfg.trust_remote_code, gpus=gpus)
        info = describe(model, name)
        info["identity"] = model_identity(model, resolve_source(name))
        self.record_model(name, info)
        return model, tokenizer

    def record_model(self, name: str, info: dict) -> None:
        """Keep a model's record (name, source, revision, size, identity) for provenance and
        the folder's fingerprint; engines that load weights their own way call it too."""
        self.models[name] = info
        self.model_info = info

    def load_dataset(self) -> list[dict]:
        """The section's dataset as records; an empty selection is a config error."""
        from rl_onoff.data import load_dataset

        d = self.cfg.dataset
        options = d.options()
        if "path" in options:
            options["path"] = str(self.config.resolve(options["path"]))
        try:
            records = load_dataset(d.name, d.split, **options)
        except UnicodeDecodeError as err:
            raise StageError(f"{self.section}.dataset.path: {options.get('path')} is not UTF-8 "
                             f"text ({err.reason} at byte {err.start}); convert it to UTF-8")
        except ValueError as err:  # the loaders' messages name the file and the fix
            raise ConfigError(f"{self.section}.dataset: {err}") from None
        if not records:
            raise ConfigError(f"{self.section}.dataset: {d.name}/{d.split} with these filters "
                              "has no records; loosen `levels`/`subjects`/`num_examples`")
        return records

    def prompts(self, records: list[dict], tokenizer, limit: int | None = None
                ) -> tuple[list[dict], list[str], list[list[int]]]:
        """(records, prompt texts, prompt token ids) under the section's task. A prompt that
        the model's context (`limit` tokens; see `context_length`) cannot hold with
        max_new_tokens is an error, or with `task.on_long_prompt: skip` left out (and
        counted on the terminal)."""
        from rl_onoff.tasks import build_prompt, encode_prompt

        task = self.cfg.task
        texts = [build_prompt(r["question"], tokenizer, task.template, task.format,
                              task.system_prompt, task.enable_thinking, task.prefill)
                 for r in records]
        ids = [encode_prompt(t, tokenizer, task.template) for t in texts]
        new = getattr(getattr(self.cfg, "sampling", None), "max_new_tokens", 0)
        long = {i for i, p in enumerate(ids) if limit is not None and len(p) + new > limit}
        if long and task.on_long_prompt == "error":
            i = min(long)
            raise ConfigError(
                f"{self.section}.task.on_long_prompt: {len(long)} prompt(s) do not fit the "
                f"model's context of {limit} tokens with max_new_tokens {new} (e.g. "
                f"{records[i]['id']}: {len(ids[i])} prompt tokens); set on_long_prompt: skip "
                "to leave them out, or lower sampling.max_new_tokens")
        if long:
            print(f"{self.script}: skipped {len(long)} prompt(s) longer than the model's context "
                  f"({limit} tokens with {new} new)")
        if not len(long) < len(records):
            raise ConfigError(f"{self.section}.task: every prompt is longer than the model's "
                              f"context ({limit} tokens with {new} new)")
        keep = [i for i in range(len(records)) if i not in long]
        return [records[i] for i in keep], [texts[i] for i in keep], [ids[i] for i in keep]

    # -- the output folder ------------------------------------------------
    def claim(self, extra: dict | None = None) -> Path:
        """Check the folder against this configuration; call once the model and data loaded.
        Returns the folder to write to (another one under `new_dir`)."""
        identity = {n: m.get("identity") for n, m in self.models.items()}
        fields = fingerprint_fields(self.cfg, identity, extra)
        claimed: Path | str = self.out
        if self.ranks.main:
            try:
                claimed = self._claim(self.out, fields)
                self.run.info["output_dir"] = str(claimed)
            except StageError as err:
                claimed = f"error: {err}"
                self.ranks.from_main(claimed)
                raise
        claimed = self.ranks.from_main(claimed)
        if isinstance(claimed, str):
            raise StageError(f"rank 0 refused the output folder: {claimed}")
        self.out = claimed
        return self.out

    def _claim(self, out: Path, fields: dict) -> Path:
        key = fingerprint(fields)
        path = out / FINGERPRINT
        old = None
        if path.is_file():
            try:
                old = io.read_json(path)
            except (OSError, ValueError):
                old = {"fingerprint": None, "fields": {}}
        elif any(p.name != LOCK for p in out.iterdir()):
            old = {"fingerprint": None, "fields": {}}  # files of unknown origin
        if old is not None and old.get("fingerprint") != key:
            changes = differences(old.get("fields", {}), fields) or ["files of unknown origin"]
            policy = self.cfg.on_config_change
            if policy == "refuse":
                raise StageError(
                    f"{out} holds results of a different configuration ({'; '.join(changes[:6])}"
                    f"{'; ...' if len(changes) > 6 else ''}). Nothing was changed. Choose a new "
                    f"`{self.section}.output_dir`, or set `{self.section}.on_config_change` to "
                    "`new_dir` (write beside it) or `overwrite` (discard the old results)")
            if policy == "new_dir":
                beside = out.with_name(f"{out.name}-{key[:8]}")
                lock = acquire_lock(beside)
                release_lock(self._lock)
                self._lock = lock
                return self._claim(beside, fields) if (beside / FINGERPRINT).is_file() \
                    else self._write_fingerprint(beside, key, fields)
            clear_folder(out)
        return self._write_fingerprint(out, key, fields)

    @staticmethod
    def _write_fingerprint(out: Path, key: str, fields: dict) -> Path:
        io.write_json(out / FINGERPRINT, {"fingerprint": key, "fields": fields})
        return out

    def finish(self, summary: dict | None = None) -> None:
        """Write the provenance of the data beside it, then close the run record."""
        from rl_onoff.tracking import write_provenance

        if not self.ranks.main:
            return
        if self.out is not None:
            info = self.model_info if len(self.models) <= 1 else self.models
            write_provenance(self.out, self.config, self.section, self.run, info)
        self.run.finish(summary=summary)


def context_length(model) -> int | None:
    """The longest sequence the model was built for, where its config says."""
    config = model.config
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None
