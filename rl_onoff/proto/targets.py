"""Which texts 04-proto reconstructs: 00's responses (a selection) or texts from the YAML.

A target is a list of token ids without special tokens. By default (`tokens:
text`) the response text is tokenised again, so that a target is exactly what
the tokenizer makes of the string, whoever wrote it. `tokens: sampled` takes
the ids 00 sampled instead, less the EOS and other special tokens; the two can
differ where the model sampled a non-canonical split of the same string.
Each target records whether they agree (`matches_sampled`).
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field

from rl_onoff.config import ConfigError
from rl_onoff.proto.config import ProtoConfig

SECTION = "04_proto"


@dataclass
class Target:
    text: str                   # the text as given (00's response text, or the YAML string)
    token_ids: list[int]        # what is reconstructed (cut to max_tokens)
    source: dict = field(default_factory=dict)  # where it came from (question id, sample, ...)


def select_samples(results: dict, cfg: ProtoConfig) -> list[dict]:
    """The first `num_texts` responses that fit `select`, at most `per_question` per question."""
    wanted = {"correct": lambda s: s["reward"] == 1.0, "incorrect": lambda s: s["reward"] != 1.0,
              "all": lambda s: True}[cfg.select]
    chosen = []
    for question in results["questions"]:
        taken = 0
        for index, sample in enumerate(question["samples"]):
            if taken == cfg.per_question or len(chosen) == cfg.num_texts:
                break
            if wanted(sample) and sample["text"].strip():
                chosen.append({**sample, "question_id": question["id"], "sample_index": index})
                taken += 1
    if not chosen:
        raise ConfigError(f"{SECTION}.select: none of the responses in {cfg.input} is "
                          f"{cfg.select!r}; set `{SECTION}.select: all`, sample more in 00, or "
                          f"give `{SECTION}.texts`")
    return chosen


def build_targets(cfg: ProtoConfig, tokenizer, results: dict | None) -> list[Target]:
    """Token-id targets from the YAML texts, or else from 00's `results`."""
    special = set(tokenizer.all_special_ids)
    encode = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]
    targets = []
    if cfg.texts:
        for i, text in enumerate(cfg.texts):
            targets.append(Target(text, encode(text), {"kind": "yaml", "index": i}))
    else:
        for sample in select_samples(results, cfg):
            sampled = [t for t in sample["token_ids"] if t not in special]
            ids = encode(sample["text"]) if cfg.tokens == "text" else sampled
            targets.append(Target(sample["text"], ids, {
                "kind": "00-sample", "question_id": sample["question_id"],
                "sample_index": sample["sample_index"], "reward": sample["reward"],
                "matches_sampled": encode(sample["text"]) == sampled}))
    if cfg.max_tokens is not None:
        for target in targets:
            target.token_ids = target.token_ids[:cfg.max_tokens]
    empty = [i for i, t in enumerate(targets) if not t.token_ids]
    if empty:
        raise ConfigError(f"{SECTION}: targets {empty} have no tokens; remove them from "
                          f"`{SECTION}.texts`")
    return targets


def random_controls(targets: list[Target], tokenizer, seed: int) -> list[Target]:
    """Per target, a text of as many tokens drawn uniformly from the non-special vocabulary
    (seeded by the target's ids): what the vectors hold when the model's prior cannot help."""
    special = set(tokenizer.all_special_ids)
    vocab = [i for i in range(len(tokenizer)) if i not in special]
    out = []
    for index, target in enumerate(targets):
        key = hashlib.sha256(repr((seed, target.token_ids)).encode()).hexdigest()
        rng = random.Random(int(key[:15], 16))
        ids = [rng.choice(vocab) for _ in target.token_ids]
        out.append(Target(tokenizer.decode(ids), ids, {"kind": "random", "control_for": index}))
    return out
