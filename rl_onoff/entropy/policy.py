"""The policy seen as a differentiable function of its trainable parameters.

A `Group` is one prompt with its G sampled responses. `token_terms` runs the
model over a group (teacher forcing) and returns, per response token, the log
probability of the sampled token and the full-vocabulary entropy of the
next-token distribution, both in the model's precision (fp64 when the model is
fp64: the finite-difference check needs it; `decoding.entropy_from_logits`
always works in fp32, so it is not used here) and differentiable.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class Group:
    """One prompt and the responses sampled for it (token ids, EOS included when emitted)."""
    prompt_ids: list[int]
    responses: list[list[int]]
    rewards: list[float] = field(default_factory=list)
    question: int = -1              # index of the prompt in the dataset


@dataclass
class TokenTerms:
    logp: torch.Tensor      # (G, L) log pi(y_t | prefix); 0 at padding
    entropy: torch.Tensor   # (G, L) entropy of pi(. | prefix) in nats; 0 at padding
    mask: torch.Tensor      # (G, L) 1.0 on response tokens

    @property
    def seq_logp(self) -> torch.Tensor:
        """log pi(y | prompt) per response."""
        return self.logp.sum(-1)

    @property
    def lengths(self) -> torch.Tensor:
        return self.mask.sum(-1)


def trainable(model) -> list[torch.nn.Parameter]:
    """The parameters a step would change (all of them, or only a LoRA adapter's)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters (requires_grad is off everywhere)")
    return params


def flat(tensors, params) -> torch.Tensor:
    """One vector (fp32 at least: bf16 dot products over millions of terms lose the signal)
    from per-parameter tensors; None, from an unused parameter, becomes zeros."""
    vector = torch.cat([(t if t is not None else torch.zeros_like(p)).reshape(-1)
                        for t, p in zip(tensors, params)])
    return vector.to(torch.promote_types(vector.dtype, torch.float32))


def unflat(vector: torch.Tensor, params) -> list[torch.Tensor]:
    """Split a flat vector back into tensors shaped like `params`."""
    out, start = [], 0
    for p in params:
        out.append(vector[start:start + p.numel()].view_as(p))
        start += p.numel()
    return out


def token_terms(model, group: Group, temperature: float = 1.0) -> TokenTerms:
    """Per-token log-probs and entropies of the group's responses under softmax(logits / T)."""
    device = next(model.parameters()).device
    width = max(len(r) for r in group.responses)
    if width == 0:
        raise ValueError("every response in the group is empty; nothing to score")
    prompt = group.prompt_ids
    rows = [prompt + r + [r[-1] if r else prompt[-1]] * (width - len(r)) for r in group.responses]
    ids = torch.tensor(rows, dtype=torch.long, device=device)
    mask = torch.tensor([[1.0] * len(r) + [0.0] * (width - len(r)) for r in group.responses],
                        device=device)
    attention = torch.ones_like(ids)
    attention[:, len(prompt):] = (mask > 0).long()
    logits = model(input_ids=ids, attention_mask=attention, logits_to_keep=width + 1).logits
    logits = logits[:, -(width + 1):-1]
    target = ids[:, len(prompt):]
    logp, entropy = chunked_terms(logits, target, temperature)
    mask = mask.to(logp.dtype)
    zero = torch.zeros_like(logp)
    return TokenTerms(logp=torch.where(mask > 0, logp, zero),
                      entropy=torch.where(mask > 0, entropy, zero), mask=mask)


CHUNK_TOKENS = 256   # positions per full-vocabulary log-softmax (x vocab floats live at once)


def _terms(logits: torch.Tensor, target: torch.Tensor, temperature: float):
    z = logits.to(torch.promote_types(logits.dtype, torch.float32)) / temperature
    logp_all = z.log_softmax(-1)
    logp = logp_all.gather(-1, target[..., None]).squeeze(-1)
    p = logp_all.exp()
    entropy = -(p * torch.where(p > 0, logp_all, torch.zeros_like(logp_all))).sum(-1)
    return logp, entropy


def chunked_terms(logits: torch.Tensor, target: torch.Tensor, temperature: float,
                  chunk_tokens: int | None = None):
    """(log pi of the targets, full-vocabulary entropies) per position, a chunk of positions at
    a time. Under autograd each chunk is checkpointed: backward recomputes its softmax instead of
    keeping four (rows x positions x vocab) fp32 tensors alive, so only the logits stay."""
    from torch.utils.checkpoint import checkpoint

    rows, width = target.shape
    step = max(1, (chunk_tokens or CHUNK_TOKENS) // max(rows, 1))
    if width <= step:
        return _terms(logits, target, temperature)
    parts = []
    for start in range(0, width, step):
        args = (logits[:, start:start + step], target[:, start:start + step], temperature)
        parts.append(checkpoint(_terms, *args, use_reentrant=False) if logits.requires_grad
                     else _terms(*args))
    return torch.cat([p[0] for p in parts], 1), torch.cat([p[1] for p in parts], 1)
