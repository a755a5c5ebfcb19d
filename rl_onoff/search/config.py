"""03-tree-search's section of the YAML."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from rl_onoff.config import (ConfigError, DatasetConfig, SamplingConfig, StageConfig, TaskConfig,
                             positive, suggest)


@dataclass
class TreeSearchConfig(StageConfig):
    """03-tree-search: maximum-entropy tree search vs greedy and plain sampling at equal budget."""
    models: list[str] = field(default_factory=list)  # several models, same questions; []: [model]
    dataset: DatasetConfig = field(default_factory=lambda: DatasetConfig(num_examples=20,
                                                                         levels=[4, 5]))
    task: TaskConfig = field(default_factory=TaskConfig)
    rollouts: int = 32                  # complete responses the search samples per question
    sampling: SamplingConfig = field(default_factory=SamplingConfig)  # p_theta (temperature > 0)
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

        StageConfig.check(self, path)
        for key in ("rollouts", "samples_ahead", "batch_size"):
            positive(getattr(self, key), f"{path}.{key}")
        for i, name in enumerate(self.models):
            if not name.strip() or name in self.models[:i]:
                raise ConfigError(f"{path}.models[{i}]: got {name!r}; allowed: a model name or "
                                  "path, each listed once")
        if self.sampling.temperature <= 0:
            raise ConfigError(f"{path}.sampling.temperature: got {self.sampling.temperature}; "
                              "allowed: > 0 (a greedy search tree would be a single path)")
        if self.sampling.stop:
            raise ConfigError(f"{path}.sampling.stop: the tree search ends responses at EOS or "
                              "max_new_tokens only; set stop: []")
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
                                  f"{suggest(name, list(SHAPING_TERMS))}; allowed: "
                                  f"{', '.join(SHAPING_TERMS)}")
