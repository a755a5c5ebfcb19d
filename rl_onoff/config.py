"""The shared YAML: a generic loader with typed sections, helpful errors, overrides.

`experiment_config.yaml` holds a `defaults` section (model, device, dtype,
seed, tracking) and one section per stage (`00_sample`, `01_dist`, ...). Each
stage owns its section's dataclass beside its code and registers it in
`SECTIONS`; this module holds the loader and the blocks several stages share
(dataset, task, sampling). A section inherits the defaults and may override any
of them. A run validates `defaults` and its own section only (so a setting of
05 that needs an optional package never stops 00); unknown sections are still
reported. An unknown key, a wrong type or a bad value stops the script before
any work, with the key path, the given value and what is allowed.

    cfg = load_config()                                   # ./experiment_config.yaml
    cfg = load_config(["base.yaml", "qwen.yaml"], ["00_sample.sampling.temperature=0.6"])
    cfg["00_sample"].sampling.temperature

Relative paths in the YAML (output folders, inputs, tracking root) resolve
against the directory of the first config file, so a YAML and its outputs move
together and `pip install .` works from any folder.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Literal, Optional, Union

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIG_NAME = "experiment_config.yaml"

# Section name -> "module:Class" of its dataclass, imported only when that section is used.
# A new stage adds its line here.
SECTIONS: dict[str, str] = {
    "00_sample": "rl_onoff.sample.config:SampleConfig",
    "01_dist": "rl_onoff.distributions.config:DistConfig",
    "02_visualize": "rl_onoff.viewer.config:VisualizeConfig",
    "03_tree_search": "rl_onoff.search.config:TreeSearchConfig",
    "04_proto": "rl_onoff.proto.config:ProtoConfig",
    "05_entropy": "rl_onoff.entropy.config:EntropyConfig",
}


class ConfigError(ValueError):
    """A problem in the YAML or an override, phrased for the person editing it."""


def default_config_path() -> Path:
    """experiment_config.yaml in the working directory, else the source checkout's."""
    here = Path.cwd() / CONFIG_NAME
    return here if here.is_file() else REPO_ROOT / CONFIG_NAME


def section_class(name: str) -> type:
    module, cls = SECTIONS[name].split(":")
    return getattr(importlib.import_module(module), cls)


# ---------------------------------------------------------------------------
# The blocks every stage or several stages share


@dataclass
class TrackingConfig:
    """Where and how a run is recorded (see rl_onoff.tracking)."""
    root: str = "exp/runs"              # run records: <root>/<script>/<name>_<timestamp>/
    name: Optional[str] = None          # run name; null: generated from the script and model
    wandb: bool = False                 # mirror metrics to Weights & Biases
    wandb_project: str = "rl_onoff"
    wandb_entity: Optional[str] = None
    tags: list[str] = field(default_factory=list)
    group: Optional[str] = None


@dataclass
class Shared:
    """Settings every script has; `defaults` sets them, a section may override them."""
    model: str = "tiny-arith"           # bundled name, local path or hub id
    revision: Optional[str] = None      # hub revision (branch, tag or commit)
    device: str = "auto"                # auto | cpu | cuda | cuda:N | mps
    gpus_per_model: int = 1             # >1: spread each model copy over this many GPUs
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    trust_remote_code: bool = False
    seed: int = 0
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

    def check(self, path: str) -> None:
        if not (self.device in ("auto", "cpu", "cuda", "mps") or
                (self.device.startswith("cuda:") and self.device[5:].isdigit())):
            raise ConfigError(f"{path}.device: got {self.device!r}; allowed: auto, cpu, cuda, "
                              "cuda:N (N a GPU index), mps")
        positive(self.gpus_per_model, f"{path}.gpus_per_model")
        if self.gpus_per_model > 1 and self.device not in ("auto", "cuda"):
            raise ConfigError(f"{path}.gpus_per_model: {self.gpus_per_model} GPUs per model need "
                              f"device auto or cuda, not {self.device!r}")


@dataclass
class StageConfig(Shared):
    """A stage that writes an output folder: where, and what to do with an earlier run's."""
    output_dir: str = "exp/output"
    # an earlier run with another configuration left this folder: stop (refuse), write beside
    # it in <output_dir>-<fingerprint> (new_dir), or delete its files first (overwrite)
    on_config_change: Literal["refuse", "new_dir", "overwrite"] = "refuse"


@dataclass
class DatasetConfig:
    name: str = "arith"                 # arith | gsm8k | math | math500 | aime2025 | amc23 | gsm8k_level1 | files
    split: str = "test"
    num_examples: Optional[int] = None  # first N after filtering; null: all
    levels: Optional[list[int]] = None  # keep these difficulty levels only
    subjects: Optional[list[str]] = None
    path: Optional[str] = None          # local copy: a verl-style parquet directory or a jsonl/parquet file
    hub_id: Optional[str] = None        # override the hub id tried when online
    field_map: Optional[dict[str, str]] = None  # our field -> the file's (dotted paths allowed)

    def check(self, path: str) -> None:
        positive(self.num_examples, f"{path}.num_examples", allow_none=True)

    def options(self) -> dict:
        """Keyword arguments for rl_onoff.data.load_dataset."""
        return {k: v for k, v in dataclasses.asdict(self).items()
                if k not in ("name", "split") and v is not None}


@dataclass
class TaskConfig:
    template: Literal["auto", "plain", "chatml", "llama3"] = "auto"
    format: Literal["boxed", "structured"] = "boxed"
    system_prompt: Optional[str] = None
    enable_thinking: Optional[bool] = None  # Qwen3-style templates: false disables thinking
    prefill: str = ""                   # text the assistant turn starts with
    ignore_think: bool = True           # extract answers outside <think>...</think> only
    reward_timeout: float = 5.0         # seconds per math-verify check; over it: reward 0, status timeout
    reward_workers: Optional[int] = None  # processes scoring in parallel; null: the CPU cores
    on_long_prompt: Literal["error", "skip"] = "error"  # a prompt the model's context cannot hold

    def check(self, path: str) -> None:
        if self.reward_timeout <= 0:
            raise ConfigError(f"{path}.reward_timeout: got {self.reward_timeout}; "
                              "allowed: a positive number of seconds")
        positive(self.reward_workers, f"{path}.reward_workers", allow_none=True)


@dataclass
class SamplingConfig:
    """How tokens are drawn: temperature, then top-k, top-p, min-p (Hugging Face's order)."""
    temperature: float = 1.0            # 0: greedy
    top_p: float = 1.0                  # 1: off
    top_k: int = 0                      # 0: off
    min_p: float = 0.0                  # 0: off
    max_new_tokens: int = 96
    stop: list[str] = field(default_factory=list)  # strings that end a response

    def check(self, path: str) -> None:
        if self.temperature < 0:
            raise ConfigError(f"{path}.temperature: got {self.temperature}; allowed: >= 0 "
                              "(0 is greedy)")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"{path}.top_p: got {self.top_p}; allowed: 0 < top_p <= 1")
        if self.top_k < 0:
            raise ConfigError(f"{path}.top_k: got {self.top_k}; allowed: >= 0 (0 is off)")
        if not 0 <= self.min_p < 1:
            raise ConfigError(f"{path}.min_p: got {self.min_p}; allowed: 0 <= min_p < 1")
        positive(self.max_new_tokens, f"{path}.max_new_tokens")
        if any(not s for s in self.stop):
            raise ConfigError(f"{path}.stop: an empty stop string would end every response; "
                              "remove it")

    @property
    def params(self):
        """The token distribution (rl_onoff.decoding.SamplingParams) this block describes."""
        from rl_onoff.decoding import SamplingParams
        return SamplingParams(self.temperature, self.top_p, self.top_k, self.min_p)

    @property
    def is_plain(self) -> bool:
        """No truncation: the model's softmax at `temperature`."""
        return self.top_p == 1.0 and self.top_k == 0 and self.min_p == 0.0


def positive(value, path: str, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if value is None or value <= 0:
        raise ConfigError(f"{path}: got {value!r}; allowed: a positive integer"
                          + (" or null" if allow_none else ""))


# ---------------------------------------------------------------------------
# Building typed objects from plain data


def _type_name(tp) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _type_name(a) for a in typing.get_args(tp))
    if origin in (list, dict):
        return f"{origin.__name__} of " + ", ".join(_type_name(a) for a in typing.get_args(tp))
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {int: "integer", float: "number", str: "string", bool: "true/false"}.get(tp, str(tp))


def _convert(value: Any, tp, path: str) -> Any:
    """Check `value` against the annotation `tp`; return the typed value."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, path)
            except ConfigError:
                pass
        raise ConfigError(f"{path}: got {value!r}; expected {_type_name(tp)}")
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            hint = suggest(str(value), [str(a) for a in allowed])
            raise ConfigError(f"{path}: got {value!r}; allowed: {', '.join(map(str, allowed))}{hint}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{path}: got {value!r}; expected a list ({_type_name(tp)})")
        (item_tp,) = typing.get_args(tp)
        return [_convert(v, item_tp, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: got {value!r}; expected a mapping ({_type_name(tp)})")
        key_tp, val_tp = typing.get_args(tp)
        return {_convert(k, key_tp, f"{path}.{k}"): _convert(v, val_tp, f"{path}.{k}")
                for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return build(tp, value, path)
    if tp is float and isinstance(value, (int, float, str)) and not isinstance(value, bool):
        try:  # YAML 1.1 reads 1e-6 (no dot) as a string; it is meant as a number
            number = float(value)
        except ValueError:
            number = None
        if number is not None:
            if not math.isfinite(number):
                raise ConfigError(f"{path}: got {value!r}; allowed: a finite number")
            return number
    if tp is Any or (isinstance(value, tp) and not (tp is int and isinstance(value, bool))):
        return value
    raise ConfigError(f"{path}: got {value!r} ({type(value).__name__}); expected {_type_name(tp)}")


def suggest(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def build(cls, data: Any, path: str):
    """An instance of dataclass `cls` from the mapping `data`, validated; errors name `path`."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: got {data!r}; expected a mapping of keys to values")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        if key not in hints:
            raise ConfigError(f"{path}.{key}: unknown key{suggest(str(key), names)}; "
                              f"allowed keys in {path}: {', '.join(names)}")
        kwargs[key] = _convert(value, hints[key], f"{path}.{key}")
    obj = cls(**kwargs)
    if hasattr(obj, "check"):
        obj.check(path)
    return obj


# ---------------------------------------------------------------------------
# The whole file


@dataclass
class Config:
    """The YAML with overrides applied: `defaults`, validated, and each section validated when
    first used (`config["00_sample"]`), defaults merged in."""
    defaults: Shared
    raw: dict
    base_dir: Path = REPO_ROOT
    sources: list[str] = field(default_factory=list)
    sections: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, section: str):
        if section not in self.sections:
            if section not in SECTIONS:
                raise KeyError(f"no section {section!r}; sections: {', '.join(SECTIONS)}")
            shared_raw = self.raw.get("defaults") or {}
            self.sections[section] = build(section_class(section),
                                           _merge(shared_raw, self.raw.get(section) or {}),
                                           section)
        return self.sections[section]

    def replace(self, section: str, **changes) -> "Config":
        """A copy with some keys of one (validated) section changed."""
        obj = dataclasses.replace(self[section], **changes)
        return dataclasses.replace(self, sections={**self.sections, section: obj})

    def resolve(self, path: str | Path) -> Path:
        """A path from the YAML: absolute, ~ expanded, relative ones against `base_dir`."""
        p = Path(path).expanduser()
        return p if p.is_absolute() else self.base_dir / p

    def to_dict(self) -> dict:
        """The resolved configuration of the sections this run validated (defaults merged in)."""
        return {"defaults": dataclasses.asdict(self.defaults),
                **{name: dataclasses.asdict(obj) for name, obj in self.sections.items()}}


def _merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def parse_override(text: str) -> tuple[list[str], Any]:
    """`section.key.sub=value` -> (path, typed value); the value is read as YAML."""
    import yaml

    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected section.key=value, e.g. "
                          "00_sample.sampling.temperature=0.6")
    key, raw = text.split("=", 1)
    parts = key.strip().split(".")
    if len(parts) < 2 or not all(parts):
        raise ConfigError(f"--set {text!r}: the key must name a section and a key, "
                          "e.g. 00_sample.num_samples=4 or defaults.seed=1")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as err:
        raise ConfigError(f"--set {text!r}: the value is not valid YAML ({err})") from err
    return parts, value


def apply_override(raw: dict, parts: list[str], value: Any) -> None:
    node = raw
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"--set {'.'.join(parts)}: {'.'.join(parts[:i + 1])} is a value, "
                              "not a section")
        node = child
    node[parts[-1]] = value


def read_yaml(path: Path) -> dict:
    """One config file as a mapping of sections, with errors that name the file."""
    import yaml

    if not path.is_file():
        raise ConfigError(f"config file {path} not found; pass --config PATH "
                          f"(the default is {CONFIG_NAME} in the working directory)")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from err
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from err
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections "
                          f"(defaults, {', '.join(SECTIONS)})")
    return raw


def _with_bases(path: Path, seen: tuple = ()) -> list[tuple[Path, dict]]:
    """A config file preceded by the files its `extends:` key names (relative to it), so a
    recipe of a few lines can build on the default YAML."""
    if path in seen:
        raise ConfigError(f"{path}: `extends` loops back to itself through {seen[-1]}")
    raw = read_yaml(path)
    bases = raw.pop("extends", [])
    bases = [bases] if isinstance(bases, str) else bases
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise ConfigError(f"{path}: extends: expected a file name or a list of them, got {bases!r}")
    out = [item for base in bases
           for item in _with_bases((path.parent / base).expanduser().resolve(), (*seen, path))]
    return out + [(path, raw)]


def load_config(paths: str | Path | Iterable[str | Path] | None = None,
                overrides: Iterable[str] = (), section: str | None = None) -> Config:
    """Read and merge the config files (each after the files it `extends`; later ones override
    earlier ones), apply `overrides`, validate `defaults` and `section` (every section when
    None). Relative paths resolve against the first file's folder."""
    if paths is None:
        paths = [default_config_path()]
    elif isinstance(paths, (str, Path)):
        paths = [paths]
    paths = [Path(p).expanduser().resolve() for p in paths] or [default_config_path()]
    files = [(path, data) for given in paths for path, data in _with_bases(given)]
    paths = list(dict.fromkeys(path for path, _ in files))
    raw: dict = {}
    for _, data in files:
        raw = _merge(raw, data)
    for text in overrides:
        apply_override(raw, *parse_override(text))
    known = ["defaults", *SECTIONS]
    for name in raw:
        if name not in known:
            raise ConfigError(f"{name}: unknown section{suggest(str(name), known)}; "
                              f"allowed sections: {', '.join(known)}")
    config = Config(defaults=build(Shared, raw.get("defaults") or {}, "defaults"), raw=raw,
                    base_dir=paths[0].parent, sources=[str(p) for p in paths])
    for name in ([section] if section else SECTIONS):
        config[name]
    return config

