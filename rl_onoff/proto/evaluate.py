"""The clean pass: what the saved vectors make the frozen model emit, token by token.

Training reports the accuracy of the step it kept; this re-runs the forward
pass with the saved parameters alone (no optimiser, its own batches), which is
what anyone loading `proto.npz` would see.
"""

from __future__ import annotations

import torch

from rl_onoff.proto.method import build_inputs, pad_targets, target_logits

SUCCESS = 0.99   # accuracy at or above: the text counts as reconstructed (the bar)
PARTIAL = 0.5    # at or above (and below SUCCESS): partial; below: failed


def status(accuracy: float) -> str:
    return "success" if accuracy >= SUCCESS else "partial" if accuracy >= PARTIAL else "failed"


@torch.no_grad()
def evaluate(model, tokenizer, targets: list[list[int]], e: torch.Tensor, m: torch.Tensor | None,
             method: str, arrangement: str, batch_size: int = 64) -> list[dict]:
    """Per target: accuracy, first error, per-position probability and rank of the target
    token, and the greedy reconstruction beside the target text. `m` is texts x d, or
    1 x d when shared, or None."""
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(targets), batch_size):
        chunk = slice(start, start + batch_size)
        ids, mask = pad_targets(targets[chunk], device)
        rows_m = None if m is None else (m if len(m) == 1 else m[chunk]).to(device)  # 1 x d: shared
        logits = target_logits(model, build_inputs(e[chunk].to(device), rows_m, ids, model,
                                                   method, arrangement))
        probs = logits.softmax(-1).gather(2, ids[..., None]).squeeze(2)
        ranks = (logits > logits.gather(2, ids[..., None])).sum(2)
        predicted = logits.argmax(2)
        for row, target in enumerate(targets[chunk]):
            n = len(target)
            pred = predicted[row, :n].tolist()
            wrong = [i for i in range(n) if pred[i] != target[i]]
            accuracy = (n - len(wrong)) / n
            out.append({
                "length": n, "accuracy": accuracy, "correct": n - len(wrong),
                "top5_accuracy": (ranks[row, :n] < 5).float().mean().item(),
                "first_error": wrong[0] if wrong else None, "status": status(accuracy),
                "mean_target_prob": probs[row, :n].mean().item(),
                "target_text": tokenizer.decode(target),
                "reconstructed_text": tokenizer.decode(pred),
                "target_ids": list(target), "predicted_ids": pred,
                "target_prob": [round(p, 6) for p in probs[row, :n].tolist()],
                "target_rank": ranks[row, :n].tolist()})
    return out
