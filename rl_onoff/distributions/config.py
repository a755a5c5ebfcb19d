"""01-dist's section of the YAML."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from rl_onoff.config import ConfigError, StageConfig, positive


@dataclass
class DistConfig(StageConfig):
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
        StageConfig.check(self, path)
        if self.top_k is not None and self.top_k <= 0:
            raise ConfigError(f"{path}.top_k: got {self.top_k}; allowed: a positive integer, "
                              "or null for the full distribution")
        if self.full_distribution_limit_gb <= 0:
            raise ConfigError(f"{path}.full_distribution_limit_gb: got "
                              f"{self.full_distribution_limit_gb}; allowed: a positive number of GB")
        for key in ("high_entropy_top", "token_budget", "forking_tokens"):
            positive(getattr(self, key), f"{path}.{key}")
        if not 0 < self.forking_quantile < 1:
            raise ConfigError(f"{path}.forking_quantile: got {self.forking_quantile}; "
                              "allowed: 0 < forking_quantile < 1")
