"""03-tree-search's section of the YAML."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from rl_onoff.config import (ConfigError, DatasetConfig, SamplingConfig, StageConfig, TaskConfig,
                             positive)


@dataclass
class TreeSearchConfig(StageConfig):
    """03-tree-search: maximum-entropy tree search against its controls at equal budget."""
    models: list[str] = field(default_factory=list)  # several models, same questions; []: [model]
    dataset: DatasetConfig = field(default_factory=lambda: DatasetConfig(num_examples=20,
                                                                         levels=[4, 5]))
    task: TaskConfig = field(default_factory=TaskConfig)
    rollouts: int = 32                  # complete responses the search samples per question
    sampling: SamplingConfig = field(default_factory=SamplingConfig)  # p_theta (temperature > 0)
    reward: str = "math_verify"         # r(y): a name in rl_onoff.rewards or module:function
    shaping: dict[str, float] = field(default_factory=dict)  # reward name -> weight, added to r
    lambdas: list[float] = field(default_factory=lambda: [10.0])  # target p_theta * exp(lam * r)
    blind_lambda: float = 1e-6          # the reward-blind control tree (lambda -> 0), every run
    widen_c: list[float] = field(default_factory=lambda: [1.0])      # full: >= C * (N+1)^alpha draws
    widen_alpha: list[float] = field(default_factory=lambda: [0.5])
    selection: Literal["boltzmann", "uct"] = "boltzmann"  # uct: the argmax variant
    uct_c: float = 1.0                  # uct exploration weight
    seeds: list[int] = field(default_factory=list)  # trees and samples per seed; []: [seed]
    max_pool_factor: int = 16           # plain samples per question at most rollouts * this
    bootstrap: int = 2000               # resamples of the 95% intervals over questions and seeds
    samples_ahead: int = 8              # tokens drawn ahead per node (see rl_onoff.search.kv)
    batch_size: int = 32                # trees searched together; sequences sampled together
    output_dir: str = "exp/03-tree-search/output"

    NOT_FINGERPRINTED = ("tracking", "output_dir", "on_config_change", "bootstrap")

    @property
    def seed_list(self) -> list[int]:
        return self.seeds or [self.seed]

    def check(self, path: str) -> None:
        from rl_onoff.rewards import check_name

        StageConfig.check(self, path)
        for key in ("rollouts", "samples_ahead", "batch_size", "max_pool_factor", "bootstrap"):
            positive(getattr(self, key), f"{path}.{key}")
        for key in ("models", "seeds", "lambdas", "widen_c", "widen_alpha"):
            values = getattr(self, key)
            if len(set(values)) != len(values):
                raise ConfigError(f"{path}.{key}: got {values}; allowed: each value listed once")
        for i, name in enumerate(self.models):
            if not name.strip():
                raise ConfigError(f"{path}.models[{i}]: empty; allowed: a model name or path")
        for key in ("lambdas", "widen_c", "widen_alpha"):
            if not getattr(self, key):
                raise ConfigError(f"{path}.{key}: empty; allowed: a list of one value or more")
        if self.sampling.temperature <= 0:
            raise ConfigError(f"{path}.sampling.temperature: got {self.sampling.temperature}; "
                              "allowed: > 0 (a greedy search tree would be a single path)")
        if self.sampling.stop:
            raise ConfigError(f"{path}.sampling.stop: the tree search ends responses at EOS or "
                              "max_new_tokens only; set stop: []")
        for key, values in (("lambdas", self.lambdas), ("widen_c", self.widen_c),
                            ("blind_lambda", [self.blind_lambda])):
            for value in values:
                if value <= 0:
                    raise ConfigError(f"{path}.{key}: got {value}; allowed: > 0")
        for alpha in self.widen_alpha:
            if not 0 <= alpha <= 1:
                raise ConfigError(f"{path}.widen_alpha: got {alpha}; allowed: 0 <= alpha <= 1")
        if self.uct_c < 0:
            raise ConfigError(f"{path}.uct_c: got {self.uct_c}; allowed: >= 0")
        check_name(self.reward, f"{path}.reward")
        for name in self.shaping:
            check_name(name, f"{path}.shaping.{name}")
