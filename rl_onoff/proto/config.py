"""04-proto's section of the YAML."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from rl_onoff.config import ConfigError, StageConfig, positive


@dataclass
class ProtoConfig(StageConfig):
    """04-proto: learn two input vectors from which the frozen model emits a text in one pass."""
    model: str | None = None         # null: 00's model (texts from 00) or defaults.model
    models: list[str] = field(default_factory=list)  # several models, same texts; []: [model]
    input: str = "exp/00-sample/output"  # 00's output directory or its results.json
    texts: list[str] = field(default_factory=list)  # non-empty: these targets instead of 00's
    select: Literal["correct", "incorrect", "all"] = "correct"  # which of 00's responses
    num_texts: int = 8                  # the first N selected responses (question order)
    per_question: int = 1               # at most this many responses from one question
    tokens: Literal["text", "sampled"] = "text"  # re-tokenise the text, or 00's sampled ids
    max_tokens: int | None = None    # cut targets to their first N tokens; null: whole
    method: Literal["one_step", "mem"] = "one_step"  # mem: the autoregressive [mem] baseline
    arrangement: Literal["e_m", "e_m_alternate", "e_only"] = "e_m"
    share_m: bool = False               # one m for all texts (per-text early stop then off)
    transfer_texts: list[str] = field(default_factory=list)  # with share_m: new texts that
                                        # learn only e against the learned m (and own e, m)
    steps: int = 5000                   # step cap per text (per length when sweeping)
    patience: int | None = 2000      # stop a text after this many steps without a better
                                        # (accuracy, loss); null: run to the cap
    min_delta: float = 1e-4             # a loss drop (nats/token) smaller than this is no gain
    lr: float = 0.01
    betas: list[float] = field(default_factory=lambda: [0.9, 0.9])
    weight_decay: float = 0.01
    lr_schedule: Literal["constant", "cosine"] = "constant"
    max_grad_norm: float | None = None  # clip each text's gradient; null: none (Kuratov)
    init: Literal["normal", "embedding", "small"] = "embedding"
    restarts: int = 1                   # independent random starts per text (per length
                                        # when sweeping); the best is kept
    control: bool = True                # add one random-token text per target, same length
    baseline: bool = True               # each text's no-memory accuracy and cross-entropy
    batch_size: int = 64                # texts optimised together
    sweep: bool = False                 # capacity: sqrt(2) grid of prefixes, then bisection
    sweep_start: int = 4                # shortest prefix of the sweep, in tokens
    log_every: int = 10                 # steps between metric lines in the run record
    map_texts: int = 8                  # texts drawn in the token error map
    interpolation_points: int = 11      # points on the line between two restarts (0: skip)
    output_dir: str = "exp/04-proto/output"

    NOT_FINGERPRINTED = ("log_every", "map_texts")

    def check(self, path: str) -> None:
        StageConfig.check(self, path)
        for key in ("num_texts", "per_question", "steps", "restarts", "batch_size",
                    "sweep_start", "log_every", "map_texts"):
            positive(getattr(self, key), f"{path}.{key}")
        positive(self.patience, f"{path}.patience", allow_none=True)
        if self.min_delta < 0:
            raise ConfigError(f"{path}.min_delta: got {self.min_delta}; allowed: >= 0")
        if self.interpolation_points < 0 or self.interpolation_points == 1:
            raise ConfigError(f"{path}.interpolation_points: got {self.interpolation_points}; "
                              "allowed: 0 (skip) or at least 2")
        for i, name in enumerate(self.models):
            if not str(name).strip():
                raise ConfigError(f"{path}.models[{i}]: empty; allowed: a model name or path")
        positive(self.max_tokens, f"{path}.max_tokens", allow_none=True)
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
        if self.transfer_texts and not self.share_m:
            raise ConfigError(f"{path}.transfer_texts: tests whether a shared m carries over to "
                              "new texts; set share_m: true, or transfer_texts: []")
        if any(not t.strip() for t in self.transfer_texts):
            raise ConfigError(f"{path}.transfer_texts: an empty text cannot be a target")
        if self.share_m and self.arrangement == "e_only":
            raise ConfigError(f"{path}.share_m: arrangement e_only has no m to share; "
                              "set share_m: false or another arrangement")
