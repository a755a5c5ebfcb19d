"""The clean pass: what the saved vectors make the frozen model emit, token by token.

Training reports the accuracy of the step it kept; this re-runs the forward
pass with the saved parameters alone (no optimiser, its own batches), which is
what anyone loading `proto.npz` would see. For [mem] it also decodes greedily
from the vector alone (each token fed back), which is what the vector generates;
teacher-forced argmax can look right while generation derails at one token.
For one_step the two are the same pass (no output is fed back).
"""

from __future__ import annotations

import math

import torch

from rl_onoff.proto.method import forward, pad_targets

SUCCESS = 0.99   # accuracy at or above: the text counts as reconstructed (the bar)
PARTIAL = 0.5    # at or above (and below SUCCESS): partial; below: failed


def status(accuracy: float) -> str:
    return "success" if accuracy >= SUCCESS else "partial" if accuracy >= PARTIAL else "failed"


@torch.no_grad()
def evaluate(model, tokenizer, targets: list[list[int]], e: torch.Tensor, m: torch.Tensor | None,
             method: str, arrangement: str, batch_size: int = 64, bos: int | None = None
             ) -> list[dict]:
    """Per target: accuracy, first error, cross-entropy in bits, per-position probability
    and rank of the target token, the argmax reconstruction beside the target text, and
    what greedy generation emits. `m` is texts x d, or 1 x d when shared, or None."""
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(targets), batch_size):
        chunk = slice(start, start + batch_size)
        ids, _ = pad_targets(targets[chunk], device)
        rows_m = None if m is None else (m if len(m) == 1 else m[chunk]).to(device)  # 1 x d: shared
        logits = forward(model, e[chunk].to(device), rows_m, ids, method, arrangement, bos)
        logprobs = logits.log_softmax(-1).gather(2, ids[..., None]).squeeze(2)
        probs = logprobs.exp()
        generated = greedy_from_memory(model, e[chunk].to(device), ids.shape[1], bos) \
            if method == "mem" else logits.argmax(2)
        ranks = (logits > logits.gather(2, ids[..., None])).sum(2)
        predicted = logits.argmax(2)
        for row, target in enumerate(targets[chunk]):
            n = len(target)
            pred = predicted[row, :n].tolist()
            wrong = [i for i in range(n) if pred[i] != target[i]]
            accuracy = (n - len(wrong)) / n
            gen = generated[row, :n].tolist()
            gen_right = [g == t for g, t in zip(gen, target)]
            out.append({
                "length": n, "accuracy": accuracy, "correct": n - len(wrong),
                "cross_entropy_bits": -logprobs[row, :n].sum().item() / math.log(2),
                "generated_accuracy": sum(gen_right) / n,
                "generated_exact_prefix": gen_right.index(False) if False in gen_right else n,
                "generated_text": tokenizer.decode(gen),
                "top5_accuracy": (ranks[row, :n] < 5).float().mean().item(),
                "first_error": wrong[0] if wrong else None, "status": status(accuracy),
                "mean_target_prob": probs[row, :n].mean().item(),
                "target_text": tokenizer.decode(target),
                "reconstructed_text": tokenizer.decode(pred),
                "target_ids": list(target), "predicted_ids": pred,
                "target_prob": [round(p, 6) for p in probs[row, :n].tolist()],
                "target_rank": ranks[row, :n].tolist()})
    return out


@torch.no_grad()
def greedy_from_memory(model, e: torch.Tensor, length: int, bos: int | None) -> torch.Tensor:
    """Greedy decoding of `length` tokens from [mem(, BOS)] alone, each token fed back
    (KV cache): rows x length token ids."""
    from rl_onoff.generation import cache_keyword, output_cache

    embed = model.get_input_embeddings()
    inputs = e[:, None, :].to(embed.weight.dtype)
    if bos is not None:
        inputs = torch.cat([inputs, embed(torch.full((len(e), 1), bos, device=e.device))], 1)
    out = model(inputs_embeds=inputs, use_cache=True)
    tokens = [out.logits[:, -1].argmax(-1)]
    keyword = cache_keyword(model)
    for _ in range(length - 1):
        out = model(input_ids=tokens[-1][:, None], use_cache=True,
                    **{keyword: output_cache(out)})
        tokens.append(out.logits[:, -1].argmax(-1))
    return torch.stack(tokens, 1)
