"""00-sample's section of the YAML."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from rl_onoff.backends.vllm_config import VLLMConfig
from rl_onoff.config import DatasetConfig, SamplingConfig, StageConfig, TaskConfig, positive


@dataclass
class SampleConfig(StageConfig):
    """00-sample: sample responses, score them, statistics."""
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    backend: Literal["hf", "vllm"] = "hf"  # hf: our loop (the reference) | vllm (extra: vllm)
    vllm: VLLMConfig = field(default_factory=VLLMConfig)  # engine settings when backend: vllm
    num_samples: int = 8                # responses per question
    batch_size: int = 64                # sequences generated together (never changes a sample)
    output_dir: str = "exp/00-sample/output"

    # where or how the run is recorded or batched, not which samples it draws
    NOT_FINGERPRINTED = ("tracking", "output_dir", "on_config_change", "batch_size", "device",
                         "num_samples", "vllm")

    def check(self, path: str) -> None:
        StageConfig.check(self, path)
        for key in ("num_samples", "batch_size"):
            positive(getattr(self, key), f"{path}.{key}")
