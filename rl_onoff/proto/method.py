"""The proto-token forward pass: learned vectors in, one logit row per target token out.

One-step (Mezentsev & Oseledets 2025): the inputs are N vectors built from e
and m (default [e, m, m, ..., m]); the frozen model runs once with its causal
mask and the output at position i predicts target token t_i (no shift).
[mem] (Kuratov et al. 2025): the inputs are [mem, BOS, t_1, ..., t_{N-1}] (BOS
where the tokenizer has one, as in their code; else [mem, t_1, ..., t_{N-1}])
and the output at the position before t_i predicts t_i, i.e. ordinary teacher
forcing after one learned vector; it is the autoregressive baseline. Training and the clean
evaluation both build their inputs here, so they cannot drift apart.
"""

from __future__ import annotations

import torch

ARRANGEMENTS = ("e_m", "e_m_alternate", "e_only")


def uses_m(method: str, arrangement: str) -> bool:
    return method == "one_step" and arrangement != "e_only"


def e_positions(arrangement: str, length: int) -> torch.Tensor:
    """Where e goes among the N inputs (m everywhere else)."""
    index = torch.arange(length)
    if arrangement == "e_m":
        return index == 0
    if arrangement == "e_m_alternate":
        return index % 2 == 0
    if arrangement == "e_only":
        return torch.ones(length, dtype=torch.bool)
    raise ValueError(f"arrangement {arrangement!r}; allowed: {', '.join(ARRANGEMENTS)}")


def pad_targets(targets: list[list[int]], device) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, mask), right-padded: with a causal mask no real position sees the padding."""
    width = max(len(t) for t in targets)
    ids = torch.zeros((len(targets), width), dtype=torch.long)
    mask = torch.zeros((len(targets), width), dtype=torch.bool)
    for row, target in enumerate(targets):
        ids[row, :len(target)] = torch.tensor(target, dtype=torch.long)
        mask[row, :len(target)] = True
    return ids.to(device), mask.to(device)


def build_inputs(e: torch.Tensor, m: torch.Tensor | None, ids: torch.Tensor, model,
                 method: str, arrangement: str, bos: int | None = None) -> torch.Tensor:
    """Input embeddings in the model's dtype from fp32 vectors e, m (rows x d): rows x N x d,
    or rows x (N+1) x d for [mem] with a BOS (see `aligned`)."""
    dtype = model.get_input_embeddings().weight.dtype
    if method == "mem":
        if bos is not None:
            ids = torch.cat([torch.full_like(ids[:, :1], bos), ids], dim=1)
        tokens = model.get_input_embeddings()(ids[:, :-1])
        return torch.cat([e[:, None, :].to(dtype), tokens], dim=1)
    where_e = e_positions(arrangement, ids.shape[1]).to(e.device)[None, :, None]
    other = e if m is None else m.expand_as(e)
    return torch.where(where_e, e[:, None, :], other[:, None, :]).to(dtype)


def target_logits(model, inputs: torch.Tensor) -> torch.Tensor:
    """fp32 logits (rows x positions x vocab) of one forward pass over `inputs`."""
    return model(inputs_embeds=inputs, use_cache=False).logits.float()


def forward(model, e: torch.Tensor, m: torch.Tensor | None, ids: torch.Tensor, method: str,
            arrangement: str, bos: int | None = None) -> torch.Tensor:
    """fp32 logits (rows x N x vocab), row i predicting target token i: the one pass that
    training and the clean evaluation share."""
    logits = target_logits(model, build_inputs(e, m, ids, model, method, arrangement, bos))
    return logits[:, 1:] if method == "mem" and bos is not None else logits


def row_stats(logits: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> dict:
    """Per row: mean cross-entropy over its tokens (differentiable), top-1 and top-5 hits."""
    nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), ids, reduction="none")
    lengths = mask.sum(1)
    loss = (nll * mask).sum(1) / lengths
    with torch.no_grad():
        rank = (logits > logits.gather(2, ids[..., None])).sum(2)  # logits above the target's
        correct = ((logits.argmax(2) == ids) & mask).sum(1)   # what greedy decoding emits
        top5 = ((rank < 5) & mask).sum(1)
    return {"loss": loss, "correct": correct, "accuracy": correct / lengths,
            "top5": top5 / lengths, "lengths": lengths}
