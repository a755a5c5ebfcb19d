"""Batched autoregressive generation with a KV cache, under our own control.

We do not call `model.generate`: its settings are merged with the model's own
generation_config, which can silently change the distribution (a hub
checkpoint's top_k or repetition penalty). Here the distribution is exactly
`rl_onoff.decoding.SamplingParams`, and each sequence reports why it stopped:
`eos`, `stop` (a stop string appeared) or `length`.

Every row draws from its own counter-based random stream (a hash of its seed
and the token index), so a row's tokens depend on its seed, prompt, model and
sampling params only: never on the batch size, the row order or its companions.
Rows leave the batch (and the KV cache) as soon as they finish.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
from dataclasses import dataclass, field

import torch

from rl_onoff.decoding import SamplingParams, sampling_logits


@dataclass
class Generated:
    token_ids: list[int]     # the response tokens, the EOS or stop-completing token included
    finish_reason: str       # eos | stop | length
    # per token: log-prob of the drawn token under the (processed, fp32) distribution it was
    # drawn from; 0.0 for greedy
    sampler_logprobs: list[float] = field(default_factory=list)


def sample_seed(seed: int, question_id: str, sample_index: int) -> int:
    """The seed of one sample: a stable 63-bit hash of (run seed, question id, sample index)."""
    text = f"{seed}\x1f{question_id}\x1f{sample_index}".encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:8], "little") >> 1


def _int64(value: int) -> int:
    """`value` mod 2**64 as a signed int64 (torch has no uint64 arithmetic)."""
    value %= 1 << 64
    return value - (1 << 64) if value >= 1 << 63 else value


_GOLDEN, _MIX1, _MIX2 = (_int64(c) for c in
                         (0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB))


def _shift_right(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Logical right shift of int64 (torch's >> is arithmetic)."""
    return (x >> bits) & ((1 << (64 - bits)) - 1)


def _mix64(x: torch.Tensor) -> torch.Tensor:
    """splitmix64's finaliser on int64 tensors (multiplication wraps mod 2**64)."""
    x = (x ^ _shift_right(x, 30)) * _MIX1
    x = (x ^ _shift_right(x, 27)) * _MIX2
    return x ^ _shift_right(x, 31)


def row_uniforms(seeds: torch.Tensor, step: int) -> torch.Tensor:
    """One float64 uniform in (0, 1] per row: a function of (its seed, step) alone."""
    bits = _mix64(_mix64(seeds) + _int64((step + 1) * _GOLDEN))
    return (_shift_right(bits, 11) + 1).double() / float(1 << 53)


def sample_rows(logits: torch.Tensor, params: SamplingParams, seeds: torch.Tensor,
                step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(token, its log-prob) per row of `logits` (batch, vocab), drawn by inverse CDF with
    each row's own uniform (`seeds`: int64 on the CPU); greedy: the argmax, log-prob 0."""
    if params.greedy:
        return logits.argmax(-1), torch.zeros(len(logits), device=logits.device)
    logp = sampling_logits(logits, params).log_softmax(-1)
    # float64 cumulative sums (MPS has none): a filtered token (probability 0) adds a flat step
    # no uniform in (0, 1] can land on, and rounding stays far below any probability that matters
    dtype = torch.float32 if logits.device.type == "mps" else torch.float64
    cdf = logp.exp().to(dtype).cumsum(-1)
    target = row_uniforms(seeds, step).to(logits.device, dtype)[:, None] * cdf[:, -1:]
    tokens = torch.searchsorted(cdf, target).squeeze(-1)
    return tokens, logp.gather(-1, tokens[:, None]).squeeze(-1)


def row_seeds(count: int, seeds: list[int] | None,
              generator: torch.Generator | None) -> torch.Tensor:
    """int64 seeds on the CPU, one per row: given, or drawn from `generator` (or torch's
    global RNG). The per-step hash of a batch's seeds is too small to be worth a device."""
    if seeds is not None:
        if generator is not None:
            raise ValueError("generate: pass `seeds` (one per prompt) or `generator`, not both")
        if len(seeds) != count:
            raise ValueError(f"generate: {len(seeds)} seeds for {count} prompts; "
                             "pass exactly one seed per prompt")
        return torch.tensor([_int64(s) for s in seeds], dtype=torch.long)
    gen_device = generator.device if generator is not None else "cpu"
    drawn = torch.randint(-(1 << 63), (1 << 63) - 1, (count,), generator=generator,
                          device=gen_device)
    return drawn.cpu()


def eos_token_ids(model, tokenizer) -> list[int]:
    """Every id that ends a response: the tokenizer's EOS and the model's declared EOS ids."""
    return declared_eos_ids(tokenizer, getattr(model, "generation_config", None))


def declared_eos_ids(tokenizer, generation_config) -> list[int]:
    """The tokenizer's EOS and the EOS ids a generation_config declares (none: just the
    tokenizer's); only EOS is taken from the generation_config, never its sampling."""
    ids = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    declared = getattr(generation_config, "eos_token_id", None)
    if declared is not None:
        ids.update(int(i) for i in ([declared] if isinstance(declared, int) else declared))
    return sorted(ids)


def left_pad(sequences: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask) with every sequence right-aligned."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        if seq:
            ids[row, width - len(seq):] = torch.tensor(seq, dtype=torch.long)
            mask[row, width - len(seq):] = 1
    return ids.to(device), mask.to(device)


def positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids that ignore left padding."""
    return (mask.cumsum(-1) - 1).clamp(min=0)


def cache_keyword(model) -> str:
    """The forward() keyword for the KV cache: `cache` in transformers >= 5.x (where
    `past_key_values` is deprecated, to be removed in 5.40), `past_key_values` before."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def output_cache(out):
    """The Cache object a forward pass returned, under either transformers naming."""
    return out.cache if "cache" in out else out.past_key_values


def grow_in_place(cache) -> None:
    """Make `cache`'s plain dynamic layers append into spare room instead of concatenating:
    transformers' DynamicLayer copies the whole cache at every step (torch.cat), about a
    tenth of a CPU decode step on a 50M model at a few hundred tokens. Other layer types,
    and transformers versions without cache layers, are left as they are."""
    growing = _growing_layer_class()
    if growing is None:
        return
    for layer in getattr(cache, "layers", ()):
        if type(layer) is growing.__base__:
            layer.__class__ = growing


@functools.cache
def _growing_layer_class():
    """DynamicLayer with an update that writes into spare capacity (doubled when full, or
    rebuilt when the layer's tensors were replaced, e.g. by batch_select_indices) and keeps
    the keys and values as views of the used part; None without DynamicLayer."""
    try:
        from transformers.cache_utils import DynamicLayer
    except ImportError:
        return None

    class GrowingLayer(DynamicLayer):
        def update(self, key_states, value_states, *args, **kwargs):
            if getattr(self, "keys", None) is None or self.keys.numel() == 0:  # not filled yet
                return super().update(key_states, value_states, *args, **kwargs)
            used, new = self.keys.shape[-2], key_states.shape[-2]
            room = getattr(self, "room", None)
            if (room is None or room[0].data_ptr() != self.keys.data_ptr()
                    or room[0].shape[:-2] != self.keys.shape[:-2]
                    or room[0].shape[-2] < used + new):
                room = tuple(t.new_empty((*t.shape[:-2], 2 * (used + new), t.shape[-1]))
                             for t in (self.keys, self.values))
                room[0][..., :used, :] = self.keys
                room[1][..., :used, :] = self.values
                self.room = room
            room[0][..., used:used + new, :] = key_states
            room[1][..., used:used + new, :] = value_states
            self.keys, self.values = room[0][..., :used + new, :], room[1][..., :used + new, :]
            return self.keys, self.values

    return GrowingLayer


class StopStrings:
    """Detects stop strings in each row's newly generated text."""

    def __init__(self, tokenizer, stop: list[str]):
        self.tokenizer, self.stop = tokenizer, list(stop)
        # enough trailing tokens to contain any stop string (a token holds at least one char)
        self.window = max((len(s) for s in self.stop), default=0) + 2

    def hit(self, generated: list[int]) -> bool:
        if not self.stop:
            return False
        tail = self.tokenizer.decode(generated[-self.window:], skip_special_tokens=False)
        return any(s in tail for s in self.stop)


@torch.inference_mode()
def generate(model, tokenizer, prompts: list[list[int]], params: SamplingParams,
             max_new_tokens: int, *, stop: list[str] = (), eos_ids: list[int] | None = None,
             seeds: list[int] | None = None, generator: torch.Generator | None = None,
             drop_finished: bool = True) -> list[Generated]:
    """Sample one response per prompt (token-id lists), all rows in one batch.

    `seeds`: one per prompt (see `sample_seed`); a row's tokens depend only on its seed.
    Without them each row's seed is drawn from `generator` (or torch's global RNG), which
    makes the rows depend on their position in the call. `drop_finished=False` keeps
    finished rows in the batch until the last one ends (same tokens, slower; benchmarks).
    """
    device = next(model.parameters()).device
    seed_rows = row_seeds(len(prompts), seeds, generator)
    eos = set(eos_ids if eos_ids is not None else eos_token_ids(model, tokenizer))
    stops = StopStrings(tokenizer, stop)
    input_ids, mask = left_pad(prompts, tokenizer.pad_token_id, device)
    pos = positions(mask)
    out = model(input_ids=input_ids, attention_mask=mask, position_ids=pos, use_cache=True,
                logits_to_keep=1)
    cache, keyword = output_cache(out), cache_keyword(model)
    grow_in_place(cache)
    tokens = [[] for _ in prompts]
    logprobs = [[] for _ in prompts]
    reasons: list[str | None] = [None] * len(prompts)   # None while the row runs
    batch_rows = list(range(len(prompts)))              # the prompt index of each batch row
    for step in range(max_new_tokens):
        next_ids, next_logprobs = sample_rows(out.logits[:, -1, :], params, seed_rows, step)
        for row, token, logprob in zip(batch_rows, next_ids.tolist(), next_logprobs.tolist()):
            if reasons[row] is not None:
                continue
            tokens[row].append(token)
            logprobs[row].append(logprob)
            if token in eos:
                reasons[row] = "eos"
            elif stops.hit(tokens[row]):
                reasons[row] = "stop"
        running = [i for i, row in enumerate(batch_rows) if reasons[row] is None]
        if not running or step + 1 == max_new_tokens:
            break
        if drop_finished and len(running) < len(batch_rows):
            keep = torch.tensor(running, device=device)
            cache.batch_select_indices(keep)
            mask, pos, next_ids = mask[keep], pos[keep], next_ids[keep]
            seed_rows = seed_rows[running]
            batch_rows = [batch_rows[i] for i in running]
        mask = torch.cat([mask, mask.new_ones((len(batch_rows), 1))], dim=1)
        pos = pos[:, -1:] + 1
        out = model(input_ids=next_ids[:, None], attention_mask=mask, position_ids=pos,
                    use_cache=True, **{keyword: cache})
    return [Generated(token_ids=ids, finish_reason=reason or "length", sampler_logprobs=lps)
            for ids, reason, lps in zip(tokens, reasons, logprobs)]
