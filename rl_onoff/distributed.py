"""Data parallelism under torchrun: which process this is, its share of the work, a barrier.

`torchrun --nproc-per-node N exp/NN-name.py` starts N processes with RANK, WORLD_SIZE and
LOCAL_RANK set (several nodes: `--nnodes` and `--rdzv-endpoint`, unchanged). Each takes
the items `items[rank::world]`, writes its own shard, and rank 0 merges them into exactly
the files one process writes. A plain `python exp/NN-name.py` is rank 0 of 1.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Sequence


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def parallel(self) -> bool:
        return self.world > 1

    def shard(self, items: Sequence) -> list:
        """This process's share: every world-th item from its rank on."""
        return list(items[self.rank::self.world])

    def barrier(self) -> None:
        if self.parallel:
            import torch.distributed as dist
            dist.barrier()

    def from_main(self, value: Any) -> Any:
        """Rank 0's `value`, on every rank."""
        if not self.parallel:
            return value
        import torch.distributed as dist
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, value: Any) -> list:
        """Every rank's `value`, in rank order, on every rank."""
        if not self.parallel:
            return [value]
        import torch.distributed as dist
        out: list = [None] * self.world
        dist.all_gather_object(out, value)
        return out

    def device(self, configured: str, gpus_per_model: int = 1) -> str:
        """The device of this rank: under torchrun with CUDA, its first GPU (cuda:N with
        N = local_rank x gpus_per_model)."""
        if not self.parallel or configured not in ("auto", "cuda"):
            return configured
        import torch
        return (f"cuda:{self.local_rank * gpus_per_model}" if torch.cuda.is_available()
                else "cpu")


def from_env() -> Ranks:
    """The ranks torchrun set (none: a single process); joins the process group."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Ranks()
    ranks = Ranks(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    import torch
    import torch.distributed as dist
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(ranks.local_rank)
        dist.init_process_group(backend)
    return ranks
