"""What the model predicts of a text with no memory vector: the prior inside every accuracy.

Kuratov et al. 2025 measure compression against it: the model reads [BOS, t_1, ...,
t_{N-1}] and predicts t_i from the tokens before it (teacher forcing). Where the
tokenizer has no BOS, the model config's `bos_token_id` starts the text, else the EOS
(a document boundary, which is how a causal LM sees the start of a text). From it:
token gain (tokens right with the vectors minus without) and information gain
(cross-entropy without the vectors minus with them, in bits).
"""

from __future__ import annotations

import math

import torch

from rl_onoff.proto.method import pad_targets, target_logits


def start_token(tokenizer, model) -> int | None:
    """The token a text starts after: BOS, else the model's configured BOS, else EOS."""
    for candidate in (tokenizer.bos_token_id, getattr(model.config, "bos_token_id", None),
                      tokenizer.eos_token_id):
        if candidate is not None:
            return int(candidate)
    return None


@torch.no_grad()
def no_memory(model, targets: list[list[int]], start: int, batch_size: int = 64) -> list[dict]:
    """Per target: greedy (teacher-forced) accuracy, tokens right and cross-entropy in bits
    of the model reading the text after `start` alone."""
    device = next(model.parameters()).device
    embed = model.get_input_embeddings()
    out = []
    for first in range(0, len(targets), batch_size):
        chunk = targets[first:first + batch_size]
        ids, _ = pad_targets(chunk, device)
        inputs = torch.cat([torch.full_like(ids[:, :1], start), ids[:, :-1]], 1)
        logits = target_logits(model, embed(inputs))
        logprobs = logits.log_softmax(-1).gather(2, ids[..., None]).squeeze(2)
        right = logits.argmax(2) == ids
        for row, target in enumerate(chunk):
            n = len(target)
            out.append({"accuracy": right[row, :n].float().mean().item(),
                        "correct": int(right[row, :n].sum()),
                        "cross_entropy_bits": -logprobs[row, :n].sum().item() / math.log(2)})
    return out


def gains(with_memory: dict, without: dict) -> dict:
    """Token gain and information gain (bits) of one text's vectors over the prior."""
    return {"baseline_accuracy": without["accuracy"],
            "baseline_cross_entropy_bits": without["cross_entropy_bits"],
            "token_gain": with_memory["correct"] - without["correct"],
            "information_gain_bits": without["cross_entropy_bits"]
            - with_memory["cross_entropy_bits"]}
