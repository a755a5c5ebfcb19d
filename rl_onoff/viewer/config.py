"""02-visualize's section of the YAML (the viewer writes no output folder)."""

from __future__ import annotations

from dataclasses import dataclass

from rl_onoff.config import ConfigError, Shared, positive


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
        positive(self.top_k_shown, f"{path}.top_k_shown")
