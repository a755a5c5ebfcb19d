"""Train the bundled `tiny-arith` model on the arith train split.

    python -m rl_onoff.models.train_tiny [--out DIR] [--steps 1100] [--seed 0]
                                         [--hidden 128] [--layers 4]

`--hidden`/`--layers` train siblings of other sizes by the same recipe (FFN 3x the
width, 4 heads), e.g. for 04-proto's capacity against model size; write them outside
the package (`--out /tmp/siblings/w64`), never over the bundled weights.

A byte-level BPE tokenizer (digits always single tokens) and a small
Llama-style causal LM, trained on prompts built exactly as the default task
config builds them (plain template, `boxed` format), with the loss on the
response only. Seeded; about a quarter of an hour on 2 CPU cores. The result is
saved with `save_pretrained`, so `load_model("tiny-arith")` reads it like any
Hugging Face checkpoint.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from pathlib import Path

import torch
from tqdm import tqdm

from rl_onoff.data import arith
from rl_onoff.tasks import build_prompt, encode_prompt

BUNDLED_DIR = Path(__file__).parent / "bundled" / "tiny-arith"
EOS, PAD = "<|endoftext|>", "<|pad|>"

# The recipe, as plain values (nanoGPT style).
VOCAB_SIZE = 512
HIDDEN, LAYERS, HEADS, FFN = 128, 4, 4, 384
BATCH, LR, WARMUP_STEPS, WEIGHT_DECAY, STEPS = 48, 3e-3, 100, 0.05, 1100
TRAIN_EXAMPLES = 60_000


def response_text(record: dict) -> str:
    """What the model learns to write after the prompt."""
    return " " + record["solution"]


def train_tokenizer(records: list[dict]):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_SIZE, special_tokens=[EOS, PAD],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    texts = [build_prompt(r["question"]) + response_text(r) for r in records[:5000]]
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, pad_token=PAD,
                                   model_max_length=512)


def build_model(tokenizer, hidden: int = HIDDEN, layers: int = LAYERS):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=FFN * hidden // HIDDEN,
        num_hidden_layers=layers, num_attention_heads=HEADS, num_key_value_heads=HEADS,
        max_position_embeddings=512, tie_word_embeddings=True,
        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return LlamaForCausalLM(config)


def encode(records: list[dict], tokenizer) -> list[tuple[list[int], int]]:
    """(prompt ids + response ids + EOS, prompt length) per record: prompt and
    response are tokenised separately, exactly as sampling sees them."""
    out = []
    for r in records:
        prompt = encode_prompt(build_prompt(r["question"], tokenizer), tokenizer, "auto")
        response = tokenizer(response_text(r))["input_ids"] + [tokenizer.eos_token_id]
        out.append((prompt + response, len(prompt)))
    return out


def collate(batch, pad_id: int):
    width = max(len(ids) for ids, _ in batch)
    input_ids = torch.full((len(batch), width), pad_id)
    labels = torch.full((len(batch), width), -100)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, (ids, prompt_len) in enumerate(batch):
        input_ids[row, :len(ids)] = torch.tensor(ids)
        labels[row, prompt_len:len(ids)] = torch.tensor(ids[prompt_len:])
        mask[row, :len(ids)] = 1
    return input_ids, mask, labels


def lr_at(step: int, total: int) -> float:
    if step < WARMUP_STEPS:
        return LR * (step + 1) / WARMUP_STEPS
    progress = min(1.0, (step - WARMUP_STEPS) / max(1, total - WARMUP_STEPS))
    return LR * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))


def train(out: Path, steps: int, seed: int, threads: int = 2, hidden: int = HIDDEN,
          layers: int = LAYERS) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    records = arith.generate("train", TRAIN_EXAMPLES, seed=0)
    tokenizer = train_tokenizer(records)
    model = build_model(tokenizer, hidden, layers)
    data = encode(records, tokenizer)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"tiny-arith: {n_params / 1e6:.2f}M parameters, vocab {len(tokenizer)}, "
          f"{len(data)} training examples")
    optim = torch.optim.AdamW(model.parameters(), lr=LR, betas=(0.9, 0.95),
                              weight_decay=WEIGHT_DECAY)
    start = time.time()
    model.train()
    bar = tqdm(range(steps), desc="train tiny-arith", unit="step")
    for step in bar:
        input_ids, mask, labels = collate(random.sample(data, BATCH), tokenizer.pad_token_id)
        for group in optim.param_groups:
            group["lr"] = lr_at(step, steps)
        loss = model(input_ids=input_ids, attention_mask=mask, labels=labels).loss
        optim.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optim.step()
        bar.set_postfix(loss=f"{loss.item():.3f}")
    print(f"trained {steps} steps in {(time.time() - start) / 60:.1f} min")
    save(model, tokenizer, out)


def save(model, tokenizer, out: Path) -> None:
    from transformers import GenerationConfig

    out.mkdir(parents=True, exist_ok=True)
    model.generation_config = GenerationConfig(
        do_sample=True, temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=96,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    # transformers 5 records its own class name, which 4.x cannot read; the fast tokenizer
    # class both read gives the same tokenizer
    path = out / "tokenizer_config.json"
    tokenizer_config = json.loads(path.read_text())
    tokenizer_config["tokenizer_class"] = "PreTrainedTokenizerFast"
    path.write_text(json.dumps(tokenizer_config, indent=2) + "\n")
    print(f"saved to {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=BUNDLED_DIR)
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2,
                        help="CPU threads (use 1 when the other core is busy)")
    parser.add_argument("--hidden", type=int, default=HIDDEN,
                        help=f"model width (a multiple of {HEADS}, the head count)")
    parser.add_argument("--layers", type=int, default=LAYERS)
    args = parser.parse_args()
    if args.hidden % HEADS or args.hidden <= 0 or args.layers <= 0:
        parser.error(f"--hidden must be a positive multiple of {HEADS}; --layers positive")
    train(args.out, args.steps, args.seed, args.threads, args.hidden, args.layers)


if __name__ == "__main__":
    main()
