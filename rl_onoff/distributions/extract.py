"""Teacher forcing: per-token statistics of the model's next-token distribution.

The full logits of a batch, (rows, length, vocab), do not fit in memory at a
150k vocabulary, and only the positions that predict response tokens matter.
So each batch runs the base model once (right padding: positions need no
adjustment, and with causal attention real tokens never see the padding),
gathers the hidden states of the response-predicting positions, and applies the
lm_head and every statistic to chunks of them on the model's device. The
logits are the model's own (bf16 on a bf16 model, exactly what 00 sampled
from); every statistic of them is computed in fp32.
"""

from __future__ import annotations

from typing import Iterator

import torch

from rl_onoff.decoding import SamplingParams, block_width, sampled_stats, scaled_exp, top_k_of

# fp32 logits per lm_head call: large enough that the lm_head weight is read once per
# many rows, small enough that a few chunk-sized temporaries fit beside the model.
CHUNK_BYTES = 256 << 20
# On a CPU the statistics then run over a few rows at a time, so that their passes over
# the vocabulary stay in cache (on an accelerator, more launches would only cost time).
CPU_STATS_BYTES = 8 << 20
Sequence = tuple[list[int], list[int]]  # (prompt token ids, response token ids)


def plan_batches(lengths: list[int], token_budget: int) -> list[list[int]]:
    """Sequence indices, longest first, in batches whose padded size (rows x longest) fits
    `token_budget`; a longer sequence gets a batch of its own. Longest first, so that an
    out-of-memory error shows at the first batch, not at the end."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    for i in order:
        if batches and (len(batches[-1]) + 1) * lengths[batches[-1][0]] <= token_budget:
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches


def token_stats(logits: torch.Tensor, targets: torch.Tensor, params: SamplingParams,
                top_k: int | None, workspace: torch.Tensor | None = None
                ) -> dict[str, torch.Tensor]:
    """Statistics of each row of `logits` (rows, vocab; finite; overwritten) at the sampled
    token `targets`: entropy at T=1 and of the distribution `params` samples from (nats), the
    target's log-probability under each and its rank, and the top-k ids and probabilities
    (`probs`, the whole distribution, when top_k is None). One top-k pass serves the rank,
    the top-k and the sampling filters; one softmax pass serves entropy, logprob and top-k.
    `workspace`, fp32 buffers (1 at the default sampling, else 3; each at least this shape),
    is reused for the exponentials (on a CPU a fresh buffer per call costs as much again in
    page faults)."""
    logits = logits.float()
    rows, vocab = logits.shape
    target = logits.gather(-1, targets[:, None])
    identity = params == SamplingParams()
    width = block_width(params, vocab) if params.filters else 0
    if top_k is None:
        rank, top = _count_above(logits, target), logits.amax(-1, keepdim=True)
        values = top_k_of(logits, width)[0] if width else None
    else:
        top_k = min(top_k, vocab)
        values, ids = top_k_of(logits, max(top_k, width))
        rank, top = _rank(logits, target, values), values[:, :1]
    shifted = logits.sub_(top)  # in place (here and below): the chunk is ours; copies cost passes
    if not identity:  # before the T=1 pass below, which overwrites `shifted`
        sampled_entropy, sampled_logprob = sampled_stats(
            shifted, targets, params, None if values is None else values - top,
            None if workspace is None else workspace[1:])
    exp = scaled_exp(shifted, 1.0, None if workspace is None
                     else workspace[0].view(-1)[:rows * vocab].view(rows, vocab))
    total = exp.sum(-1, keepdim=True)
    log_z = total.log()
    entropy = log_z[:, 0] - shifted.mul_(exp).sum(-1) / total[:, 0]  # log Z - E_p[shifted]
    logprob = (target - top - log_z)[:, 0]
    stats = {"entropy": entropy, "sampled_entropy": entropy if identity else sampled_entropy,
             "logprob": logprob, "sampled_logprob": logprob if identity else sampled_logprob,
             "rank": rank}
    if top_k is None:
        stats["probs"] = exp / total
    else:
        stats["topk_ids"] = ids[:, :top_k]
        stats["topk_probs"] = (values[:, :top_k] - top - log_z).exp()
    return stats


def _rank(logits: torch.Tensor, target: torch.Tensor, top_values: torch.Tensor) -> torch.Tensor:
    """How many logits are strictly above the target's. Where the target reaches the k-th
    largest value, every logit above it is among the top k, so the count is read off
    `top_values`; only the other rows need a pass over the vocabulary."""
    rank = _count_above(top_values, target)
    outside = (target[:, 0] < top_values[:, -1]).nonzero()[:, 0]
    if 2 * len(outside) > len(rank):  # most rows: one pass beats copying them out
        return torch.where(target[:, 0] < top_values[:, -1], _count_above(logits, target), rank)
    if len(outside):
        rank[outside] = _count_above(logits[outside], target[outside])
    return rank


def _count_above(values: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    return (values > threshold).sum(-1, dtype=torch.int32)  # int32: twice as fast as int64 on a CPU


def response_hidden(model, sequences: list[Sequence]) -> tuple[torch.Tensor, torch.Tensor]:
    """(hidden states at the positions predicting each response token, those tokens), in
    sequence order; one forward pass of the base model over the right-padded batch."""
    device = next(model.parameters()).device
    width = max(len(p) + len(r) for p, r in sequences)
    ids = torch.zeros((len(sequences), width), dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    rows, cols, targets = [], [], []
    for row, (prompt, response) in enumerate(sequences):
        if not prompt:
            raise ValueError("a response without a prompt: its first token has no prediction")
        full = prompt + response
        ids[row, :len(full)] = torch.tensor(full)
        mask[row, :len(full)] = 1
        rows += [row] * len(response)
        cols += range(len(prompt) - 1, len(full) - 1)
        targets += response
    hidden = model.base_model(input_ids=ids.to(device), attention_mask=mask.to(device),
                              use_cache=False).last_hidden_state
    return hidden[rows, cols], torch.tensor(targets, device=device)


def chunk_rows(vocab_size: int, device: torch.device) -> tuple[int, int]:
    """(rows per lm_head call, rows per statistics pass)."""
    rows = max(1, CHUNK_BYTES // (4 * vocab_size))
    return rows, max(1, CPU_STATS_BYTES // (4 * vocab_size)) if device.type == "cpu" else rows


@torch.inference_mode()
def extract(model, sequences: list[Sequence], params: SamplingParams, top_k: int | None,
            token_budget: int) -> Iterator[tuple[list[int], Iterator[tuple[int, dict]]]]:
    """Per batch: (its sequence indices, an iterator of (offset, stats) chunks). The stats
    are numpy arrays over the batch's response tokens (sequences in batch order), starting
    at `offset`; consume a batch's chunks before asking for the next batch."""
    lm_head = model.get_output_embeddings()
    rows = chunk_rows(lm_head.weight.shape[0], lm_head.weight.device)
    head = ReusedHead(lm_head)
    lengths = [len(p) + len(r) for p, r in sequences]
    for batch in plan_batches(lengths, token_budget):
        hidden, targets = response_hidden(model, [sequences[i] for i in batch])
        yield batch, _chunks(head, hidden, targets, params, top_k, rows)


class ReusedHead:
    """lm_head(hidden), written into one output buffer kept across calls. On a CPU a fresh
    (rows, vocab) output per call costs page faults worth about a third of the matmul itself
    (441 rows at hidden 256: 585 ms against 439 ms). A plain nn.Linear runs as the same BLAS
    call into the buffer; anything else (another module, hooks, a forward that accelerate
    replaced, another device or dtype, gradients on) is called as it is. The returned logits
    are valid until the next call."""

    def __init__(self, lm_head: torch.nn.Module):
        self.lm_head = lm_head
        self.out: torch.Tensor | None = None

    def __call__(self, hidden: torch.Tensor) -> torch.Tensor:
        weight, bias = getattr(self.lm_head, "weight", None), getattr(self.lm_head, "bias", None)
        if not (_plain_linear(self.lm_head) and hidden.dim() == 2
                and hidden.device == weight.device and hidden.dtype == weight.dtype
                and not torch.is_grad_enabled()):  # out= does not record a graph
            return self.lm_head(hidden)
        if self.out is None or len(self.out) < len(hidden):
            self.out = None  # freed before the larger buffer is allocated
            self.out = hidden.new_empty((len(hidden), weight.shape[0]), dtype=weight.dtype)
        out = self.out[:len(hidden)]
        if bias is None:
            return torch.mm(hidden, weight.t(), out=out)
        return torch.addmm(bias, hidden, weight.t(), out=out)


def _plain_linear(module: torch.nn.Module) -> bool:
    """An nn.Linear whose call is its own forward: no hooks, and no forward replaced on the
    instance (accelerate's device_map does that to move inputs or load offloaded weights)."""
    return (type(module) is torch.nn.Linear and "forward" not in vars(module)
            and not module._forward_hooks and not module._forward_pre_hooks)


@torch.inference_mode()
def _chunks(head, hidden, targets, params, top_k, rows) -> Iterator[tuple[int, dict]]:
    head_rows, stats_rows = rows
    vocab = head.lm_head.weight.shape[0]
    workspace = torch.empty((1 if params == SamplingParams() else 3,
                             min(stats_rows, len(targets)), vocab), device=hidden.device)
    for start in range(0, len(targets), head_rows):
        logits = head(hidden[start:start + head_rows])
        for sub in range(0, len(logits), stats_rows):
            part, at = logits[sub:sub + stats_rows], start + sub
            stats = token_stats(part, targets[at:at + len(part)], params, top_k, workspace)
            if not bool(stats["entropy"].isfinite().all()):
                raise FloatingPointError("non-finite entropy: the model produced inf/nan logits")
            yield at, {name: value.cpu().numpy() for name, value in stats.items()}


@torch.inference_mode()
def check_lm_head(model, sequence: Sequence) -> None:
    """Raise unless hidden states -> lm_head reproduce the model's own logits, as `extract`
    assumes (an architecture that rescales or soft-caps its logits after the lm_head breaks
    it); checked on the last response token of one sequence."""
    device = next(model.parameters()).device
    prompt, response = sequence
    ids = torch.tensor([prompt + response[:-1]], device=device)
    expected = model(input_ids=ids, logits_to_keep=1).logits[0, -1].float()
    hidden = model.base_model(input_ids=ids, use_cache=False).last_hidden_state[0, -1]
    got = model.get_output_embeddings()(hidden).float()
    tolerance = 1e-3 * (1 + float(expected.abs().max()))
    if float((got - expected).abs().max()) > tolerance:
        raise RuntimeError(
            f"{type(model).__name__}: the lm_head applied to the hidden states does not "
            "reproduce the model's logits (does it scale or soft-cap them?); 01-dist "
            "cannot score this architecture exactly")
