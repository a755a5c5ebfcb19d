"""The shared YAML: typed sections, validation with helpful errors, overrides.

`experiment_config.yaml` holds a `defaults` section (model, device, dtype,
seed, tracking) and one section per script (`00_sample`, `01_dist`, ...).
Each script section inherits the defaults and may override any of them. The
file is validated once, at load time: an unknown key, a wrong type or a bad
value stops the script before any work, with the key path, the given value and
what is allowed.

    cfg = load_config()                                   # the repo's YAML
    cfg = load_config("my.yaml", ["00_sample.temperature=0.6"])
    cfg["00_sample"].temperature
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Union

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = REPO_ROOT / "experiment_config.yaml"


class ConfigError(ValueError):
    """A problem in the YAML or an override, phrased for the person editing it."""


# ---------------------------------------------------------------------------
# Schema


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
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    trust_remote_code: bool = False
    seed: int = 0
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

    def check(self, path: str) -> None:
        if not (self.device in ("auto", "cpu", "cuda", "mps") or
                (self.device.startswith("cuda:") and self.device[5:].isdigit())):
            raise ConfigError(f"{path}.device: got {self.device!r}; allowed: auto, cpu, cuda, "
                              "cuda:N (N a GPU index), mps")


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
        _positive(self.num_examples, f"{path}.num_examples", allow_none=True)

    def options(self) -> dict:
        """Keyword arguments for rl_onoff.data.load_dataset."""
        opts = {k: v for k, v in dataclasses.asdict(self).items()
                if k not in ("name", "split") and v is not None}
        return opts


@dataclass
class TaskConfig:
    template: Literal["auto", "plain", "chatml", "llama3"] = "auto"
    format: Literal["boxed", "structured"] = "boxed"
    system_prompt: Optional[str] = None
    enable_thinking: Optional[bool] = None  # Qwen3-style templates: false disables thinking
    prefill: str = ""                   # text the assistant turn starts with
    ignore_think: bool = True           # extract answers outside <think>...</think> only
    reward_timeout: float = 5.0         # seconds per math-verify check; over it: reward 0, status timeout

    def check(self, path: str) -> None:
        if self.reward_timeout <= 0:
            raise ConfigError(f"{path}.reward_timeout: got {self.reward_timeout}; "
                              "allowed: a positive number of seconds")


@dataclass
class SampleConfig(Shared):
    """00-sample: sample responses, score them, statistics."""
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    num_samples: int = 8
    temperature: float = 1.0            # 0: greedy
    top_p: float = 1.0
    top_k: int = 0                      # 0: off
    min_p: float = 0.0                  # 0: off
    max_new_tokens: int = 96
    stop: list[str] = field(default_factory=list)
    batch_size: int = 64                # sequences generated together
    output_dir: str = "exp/00-sample/output"
    on_config_change: Literal["refuse", "new_dir", "overwrite"] = "refuse"

    def check(self, path: str) -> None:
        Shared.check(self, path)
        for key in ("num_samples", "max_new_tokens", "batch_size"):
            _positive(getattr(self, key), f"{path}.{key}")
        if self.temperature < 0:
            raise ConfigError(f"{path}.temperature: got {self.temperature}; allowed: >= 0 (0 is greedy)")
        _check_truncation(self, path)


@dataclass
class DistConfig(Shared):
    """01-dist: teacher-force 00's responses; exact per-token entropy and top-k distributions."""
    model: Optional[str] = None         # null: the model 00 sampled with (its results.json)
    input: str = "exp/00-sample/output"  # 00's output directory or its results.json
    output_dir: str = "exp/01-dist/output"
    top_k: Optional[int] = 20           # top-k ids and probabilities per token; null: the full distribution
    full_distribution_limit_gb: float = 4.0  # top_k null refuses an NPZ larger than this
    high_entropy_top: int = 10          # highest-entropy positions listed per sample
    token_budget: int = 16384           # padded tokens (rows x longest) per forward batch
    forking_quantile: float = 0.8       # "high entropy": at or above this quantile of all tokens
    forking_tokens: int = 30            # how many forking tokens the summary lists

    def check(self, path: str) -> None:
        Shared.check(self, path)
        if self.top_k is not None and self.top_k <= 0:
            raise ConfigError(f"{path}.top_k: got {self.top_k}; allowed: a positive integer, "
                              "or null for the full distribution")
        if self.full_distribution_limit_gb <= 0:
            raise ConfigError(f"{path}.full_distribution_limit_gb: got "
                              f"{self.full_distribution_limit_gb}; allowed: a positive number of GB")
        for key in ("high_entropy_top", "token_budget", "forking_tokens"):
            _positive(getattr(self, key), f"{path}.{key}")
        if not 0 < self.forking_quantile < 1:
            raise ConfigError(f"{path}.forking_quantile: got {self.forking_quantile}; "
                              "allowed: 0 < forking_quantile < 1")


@dataclass
class VisualizeConfig(Shared):
    """02-visualize: the Streamlit viewer of 01's output (no model or tokenizer needed)."""
    input: str = "exp/01-dist/output"   # 01's output directory; the sidebar can switch it
    address: str = "127.0.0.1"          # where `python exp/02-visualize.py` listens; 0.0.0.0: everyone
    port: int = 8501
    scale_quantile: float = 0.99        # the colour scale tops out at this quantile of the run
    shades: int = 8                     # colours on the scale (the lowest is left unhighlighted)
    top_k_shown: int = 10               # alternatives in a token's bar chart (at most 01's top_k)

    def check(self, path: str) -> None:
        Shared.check(self, path)
        if not self.address.strip():
            raise ConfigError(f"{path}.address: empty; allowed: an interface address, e.g. "
                              "127.0.0.1 (this machine only) or 0.0.0.0 (every interface)")
        if not 1 <= self.port <= 65535:
            raise ConfigError(f"{path}.port: got {self.port}; allowed: 1 to 65535 (e.g. 8501)")
        if not 0 < self.scale_quantile <= 1:
            raise ConfigError(f"{path}.scale_quantile: got {self.scale_quantile}; "
                              "allowed: 0 < scale_quantile <= 1 (1: the run's largest value)")
        if not 2 <= self.shades <= 32:
            raise ConfigError(f"{path}.shades: got {self.shades}; allowed: 2 to 32")
        _positive(self.top_k_shown, f"{path}.top_k_shown")


@dataclass
class ProtoConfig(Shared):
    """04-proto: learn two input vectors from which the frozen model emits a text in one pass."""
    model: Optional[str] = None         # null: 00's model (texts from 00) or defaults.model
    input: str = "exp/00-sample/output"  # 00's output directory or its results.json
    texts: list[str] = field(default_factory=list)  # non-empty: these targets instead of 00's
    select: Literal["correct", "incorrect", "all"] = "correct"  # which of 00's responses
    num_texts: int = 8                  # the first N selected responses (question order)
    per_question: int = 1               # at most this many responses from one question
    tokens: Literal["text", "sampled"] = "text"  # re-tokenise the text, or 00's sampled ids
    max_tokens: Optional[int] = None    # cut targets to their first N tokens; null: whole
    method: Literal["one_step", "mem"] = "one_step"  # mem: the autoregressive [mem] baseline
    arrangement: Literal["e_m", "e_m_alternate", "e_only"] = "e_m"
    share_m: bool = False               # one m for all texts (per-text early stop then off)
    steps: int = 1000                   # optimiser steps per text (per prefix when sweeping)
    lr: float = 0.01
    betas: list[float] = field(default_factory=lambda: [0.9, 0.9])
    weight_decay: float = 0.01
    lr_schedule: Literal["constant", "cosine"] = "constant"
    max_grad_norm: Optional[float] = 1.0  # clip each text's gradient; null: no clipping
    init: Literal["normal", "embedding", "small"] = "embedding"
    restarts: int = 1                   # random initialisations per text; the best is kept
    batch_size: int = 64                # texts optimised together
    sweep: bool = False                 # capacity sweep over prefixes on a sqrt(2) grid
    sweep_start: int = 4                # shortest prefix of the sweep, in tokens
    log_every: int = 10                 # steps between metric lines in the run record
    map_texts: int = 8                  # texts drawn in the token error map
    output_dir: str = "exp/04-proto/output"

    def check(self, path: str) -> None:
        Shared.check(self, path)
        for key in ("num_texts", "per_question", "steps", "restarts", "batch_size",
                    "sweep_start", "log_every", "map_texts"):
            _positive(getattr(self, key), f"{path}.{key}")
        _positive(self.max_tokens, f"{path}.max_tokens", allow_none=True)
        if self.lr <= 0:
            raise ConfigError(f"{path}.lr: got {self.lr}; allowed: a positive number")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ConfigError(f"{path}.betas: got {self.betas}; allowed: two numbers in [0, 1), "
                              "e.g. [0.9, 0.9]")
        if self.weight_decay < 0:
            raise ConfigError(f"{path}.weight_decay: got {self.weight_decay}; allowed: >= 0")
        if self.max_grad_norm is not None and self.max_grad_norm <= 0:
            raise ConfigError(f"{path}.max_grad_norm: got {self.max_grad_norm}; allowed: a "
                              "positive number, or null for no clipping")
        if any(not t.strip() for t in self.texts):
            raise ConfigError(f"{path}.texts: an empty text cannot be a target; remove it")
        if self.method == "mem" and (self.share_m or self.arrangement != "e_m"):
            raise ConfigError(f"{path}.method: mem learns one vector per text; it takes no "
                              "share_m or arrangement (set share_m: false, arrangement: e_m)")
        if self.share_m and self.sweep:
            raise ConfigError(f"{path}.sweep: the capacity sweep keeps each text's own longest "
                              "prefix, which a shared m cannot serve; set share_m: false")
        if self.share_m and self.arrangement == "e_only":
            raise ConfigError(f"{path}.share_m: arrangement e_only has no m to share; "
                              "set share_m: false or another arrangement")


@dataclass
class EntropyScalingConfig:
    """05-entropy batch-scaling: delta-H1 at several B_E, `runs` E batches each, one U batch."""
    batch_e_values: list[int] = field(default_factory=lambda: [4, 8, 16, 32])
    runs: int = 8                       # E batches per B_E
    alpha: float = 0.01                 # significance level of the verdicts


@dataclass
class EntropySanityConfig:
    """05-entropy sanity-check: `runs` runs with fresh U and E, `runs` more with one fixed U."""
    runs: int = 12
    alpha: float = 0.01


@dataclass
class EntropySweepConfig:
    """05-entropy eta-sweep: the real step at each learning rate on one U and one E batch."""
    lrs: list[float] = field(default_factory=lambda: [1e-8, 1e-7, 1e-6, 3e-6, 1e-5, 3e-5, 1e-4,
                                                      3e-4, 1e-3])
    tolerance: float = 0.1              # "linear" while |Delta-H_true / delta-H1 - 1| <= this


@dataclass
class EntropyDebugConfig:
    """05-entropy debug: every mode at these small sizes, per-phase logs."""
    batch_e: int = 4
    batch_u: int = 4
    num_samples: int = 4
    max_new_tokens: int = 32
    runs: int = 3
    batch_e_values: list[int] = field(default_factory=lambda: [2, 4, 8])
    save_gradients: bool = True         # NPZ (float32) of g_U, the direction, grad H: the single run


@dataclass
class EntropyConfig(Shared):
    """05-entropy: first-order entropy change of one policy-gradient step, validated."""
    mode: Literal["single", "batch-scaling", "sanity-check", "eta-sweep", "debug"] = "single"
    dataset: DatasetConfig = field(default_factory=lambda: DatasetConfig(split="train",
                                                                         num_examples=1000))
    task: TaskConfig = field(default_factory=TaskConfig)
    adapter: Optional[str] = None       # a LoRA adapter directory (needs peft): only it is trained
    precision: Literal["model", "float64"] = "float64"  # float64: cast the policy (exact truth at small eta)
    num_samples: int = 8                # G responses per prompt
    temperature: float = 1.0            # the policy is softmax(logits / temperature)
    max_new_tokens: int = 96
    batch_size: int = 128               # sequences generated together
    batch_e: int = 16                   # B_E prompts in the entropy batch
    batch_u: int = 16                   # B_U prompts in the update batch
    share_batches: bool = False         # true: E is the U batch (biased; shows what the tests catch)
    advantage_std: bool = False         # divide A = r - mean(r) by the group's std (GRPO)
    optimizer: Literal["sgd", "adam", "adamw"] = "adam"
    lr: float = 1e-6                    # eta of the step
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    weight_decay: float = 0.0
    optimizer_state: Optional[str] = None  # a torch Adam/AdamW state_dict file (moments, step)
    batch_scaling: EntropyScalingConfig = field(default_factory=EntropyScalingConfig)
    sanity_check: EntropySanityConfig = field(default_factory=EntropySanityConfig)
    eta_sweep: EntropySweepConfig = field(default_factory=EntropySweepConfig)
    debug: EntropyDebugConfig = field(default_factory=EntropyDebugConfig)
    output_dir: str = "exp/05-entropy/output"

    def check(self, path: str) -> None:
        import importlib.util

        Shared.check(self, path)
        for key in ("num_samples", "batch_e", "batch_u", "max_new_tokens", "batch_size"):
            _positive(getattr(self, key), f"{path}.{key}")
        for key in ("num_samples", "batch_e", "batch_u"):
            if getattr(self, key) < 2:
                raise ConfigError(f"{path}.{key}: got {getattr(self, key)}; allowed: >= 2 "
                                  "(baselines and standard errors need two or more)")
        for key in ("temperature", "lr", "eps"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"{path}.{key}: got {getattr(self, key)}; allowed: a positive number")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ConfigError(f"{path}.betas: got {self.betas}; allowed: two numbers in [0, 1)")
        if self.weight_decay < 0:
            raise ConfigError(f"{path}.weight_decay: got {self.weight_decay}; allowed: >= 0")
        if self.optimizer_state is not None and self.optimizer == "sgd":
            raise ConfigError(f"{path}.optimizer_state: an optimizer state holds Adam moments; "
                              "set optimizer to adam or adamw, or optimizer_state to null")
        if self.adapter is not None and importlib.util.find_spec("peft") is None:
            raise ConfigError(f"{path}.adapter: a LoRA adapter needs the peft package, which is "
                              "not installed: `pip install peft`, or set adapter: null")
        scaling = self.batch_scaling
        if len(set(scaling.batch_e_values)) < 3 or min(scaling.batch_e_values) < 2:
            raise ConfigError(f"{path}.batch_scaling.batch_e_values: got {scaling.batch_e_values}; "
                              "allowed: at least 3 different sizes, each >= 2")
        for key, runs in (("batch_scaling.runs", scaling.runs),
                          ("sanity_check.runs", self.sanity_check.runs),
                          ("debug.runs", self.debug.runs)):
            if runs < 3:
                raise ConfigError(f"{path}.{key}: got {runs}; allowed: >= 3 (a spread needs runs)")
        for key, alpha in (("batch_scaling.alpha", scaling.alpha),
                           ("sanity_check.alpha", self.sanity_check.alpha)):
            if not 0 < alpha < 1:
                raise ConfigError(f"{path}.{key}: got {alpha}; allowed: 0 < alpha < 1")
        if len(self.eta_sweep.lrs) < 2 or min(self.eta_sweep.lrs) <= 0:
            raise ConfigError(f"{path}.eta_sweep.lrs: got {self.eta_sweep.lrs}; allowed: at least "
                              "2 positive learning rates")
        if self.eta_sweep.tolerance <= 0:
            raise ConfigError(f"{path}.eta_sweep.tolerance: got {self.eta_sweep.tolerance}; "
                              "allowed: a positive number (relative deviation)")
        debug = self.debug
        for key in ("batch_e", "batch_u", "num_samples"):
            if getattr(debug, key) < 2:
                raise ConfigError(f"{path}.debug.{key}: got {getattr(debug, key)}; allowed: >= 2")
        _positive(debug.max_new_tokens, f"{path}.debug.max_new_tokens")
        if len(set(debug.batch_e_values)) < 3 or min(debug.batch_e_values) < 2:
            raise ConfigError(f"{path}.debug.batch_e_values: got {debug.batch_e_values}; "
                              "allowed: at least 3 different sizes, each >= 2")


@dataclass
class TreeSearchConfig(Shared):
    """03-tree-search: maximum-entropy tree search vs greedy and plain sampling at equal budget."""
    models: list[str] = field(default_factory=list)  # several models, same questions; []: [model]
    dataset: DatasetConfig = field(default_factory=lambda: DatasetConfig(num_examples=20,
                                                                         levels=[4, 5]))
    task: TaskConfig = field(default_factory=TaskConfig)
    rollouts: int = 32                  # complete responses the search samples per question
    max_new_tokens: int = 96
    temperature: float = 1.0            # p_theta of expansions, rollouts and plain sampling (> 0)
    top_p: float = 1.0
    top_k: int = 0                      # 0: off
    min_p: float = 0.0                  # 0: off
    lam: float = 10.0                   # lambda: the target is p_theta(y) * exp(lambda * r(y))
    widen_c: float = 1.0                # progressive widening: full with >= C * N^alpha children
    widen_alpha: float = 0.5
    selection: Literal["boltzmann", "uct"] = "boltzmann"  # uct: the argmax variant
    uct_c: float = 1.0                  # uct exploration weight
    shaping: dict[str, float] = field(default_factory=dict)  # term -> weight, added to the reward
    samples_ahead: int = 8              # tokens drawn ahead per node (see rl_onoff.search.kv)
    batch_size: int = 32                # trees searched together; sequences sampled together
    output_dir: str = "exp/03-tree-search/output"

    def check(self, path: str) -> None:
        from rl_onoff.search.rewards import SHAPING_TERMS

        Shared.check(self, path)
        for key in ("rollouts", "max_new_tokens", "samples_ahead", "batch_size"):
            _positive(getattr(self, key), f"{path}.{key}")
        for i, name in enumerate(self.models):
            if not name.strip() or name in self.models[:i]:
                raise ConfigError(f"{path}.models[{i}]: got {name!r}; allowed: a model name or "
                                  "path, each listed once")
        if self.temperature <= 0:
            raise ConfigError(f"{path}.temperature: got {self.temperature}; allowed: > 0 "
                              "(a greedy search tree would be a single path)")
        _check_truncation(self, path)
        for key in ("lam", "widen_c"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"{path}.{key}: got {getattr(self, key)}; allowed: > 0")
        if not 0 <= self.widen_alpha <= 1:
            raise ConfigError(f"{path}.widen_alpha: got {self.widen_alpha}; allowed: 0 <= alpha <= 1")
        if self.uct_c < 0:
            raise ConfigError(f"{path}.uct_c: got {self.uct_c}; allowed: >= 0")
        for name in self.shaping:
            if name not in SHAPING_TERMS:
                raise ConfigError(f"{path}.shaping.{name}: unknown term"
                                  f"{_suggest(name, list(SHAPING_TERMS))}; allowed: "
                                  f"{', '.join(SHAPING_TERMS)}")


SECTIONS: dict[str, type] = {
    "00_sample": SampleConfig,
    "01_dist": DistConfig,
    "02_visualize": VisualizeConfig,
    "03_tree_search": TreeSearchConfig,
    "04_proto": ProtoConfig,
    "05_entropy": EntropyConfig,
}


def _positive(value, path: str, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if value is None or value <= 0:
        raise ConfigError(f"{path}: got {value!r}; allowed: a positive integer"
                          + (" or null" if allow_none else ""))


def _check_truncation(cfg, path: str) -> None:
    """The sampling filters 00 and 03 share: top_p, top_k, min_p."""
    if not 0 < cfg.top_p <= 1:
        raise ConfigError(f"{path}.top_p: got {cfg.top_p}; allowed: 0 < top_p <= 1")
    if cfg.top_k < 0:
        raise ConfigError(f"{path}.top_k: got {cfg.top_k}; allowed: >= 0 (0 is off)")
    if not 0 <= cfg.min_p < 1:
        raise ConfigError(f"{path}.min_p: got {cfg.min_p}; allowed: 0 <= min_p < 1")


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
            hint = _suggest(str(value), [str(a) for a in allowed])
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
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):
        try:  # YAML 1.1 reads 1e-6 (no dot) as a string; it is meant as a number
            return float(value)
        except ValueError:
            pass
    if tp is Any or (isinstance(value, tp) and not (tp is int and isinstance(value, bool))):
        return value
    raise ConfigError(f"{path}: got {value!r} ({type(value).__name__}); expected {_type_name(tp)}")


def _suggest(word: str, choices: list[str]) -> str:
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
            raise ConfigError(f"{path}.{key}: unknown key{_suggest(str(key), names)}; "
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
    """The validated YAML: `defaults` plus one resolved object per script section."""
    defaults: Shared
    sections: dict[str, Any]
    source: Optional[str] = None

    def __getitem__(self, section: str):
        if section not in self.sections:
            raise KeyError(f"no section {section!r}; sections: {sorted(self.sections)}")
        return self.sections[section]

    def to_dict(self) -> dict:
        """The resolved configuration (defaults merged into every section)."""
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
        raise ConfigError(f"--set {text!r}: expected section.key=value, e.g. 00_sample.temperature=0.6")
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


def _apply_override(raw: dict, parts: list[str], value: Any) -> None:
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


def load_config(path: str | Path | None = None, overrides: typing.Iterable[str] = ()) -> Config:
    """Read, override and validate the YAML (default: the repository's experiment_config.yaml)."""
    import yaml

    path = Path(path) if path is not None else DEFAULT_CONFIG
    if not path.is_file():
        raise ConfigError(f"config file {path} not found; pass --config PATH "
                          f"(the default is {DEFAULT_CONFIG})")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from err
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections "
                          f"(defaults, {', '.join(SECTIONS)})")
    for text in overrides:
        _apply_override(raw, *parse_override(text))
    known = ["defaults", *SECTIONS]
    for name in raw:
        if name not in known:
            raise ConfigError(f"{name}: unknown section{_suggest(str(name), known)}; "
                              f"allowed sections: {', '.join(known)}")
    shared_raw = raw.get("defaults") or {}
    defaults = build(Shared, shared_raw, "defaults")
    sections = {name: build(cls, _merge(shared_raw, raw.get(name) or {}), name)
                for name, cls in SECTIONS.items()}
    return Config(defaults=defaults, sections=sections, source=str(path))
