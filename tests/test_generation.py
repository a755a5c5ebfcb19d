"""The sampling distribution and the generation loop, checked independently."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import GenerationConfig

from rl_onoff.decoding import SamplingParams, entropy_from_logits, sampling_logits
from rl_onoff.generation import generate


class Tok:
    pad_token_id, eos_token_id = 0, 1

    def decode(self, ids, skip_special_tokens=False):
        return "".join(chr(ord("a") + i % 26) for i in ids)


@pytest.fixture(scope="module")
def model(small_llama):
    return small_llama(vocab_size=40)


def reference_probs(logits: np.ndarray, p: SamplingParams) -> np.ndarray:
    """The sampling distribution computed from scratch in float64 numpy."""
    x = logits.astype(np.float64) / p.temperature
    keep = np.ones_like(x, dtype=bool)
    if p.top_k:
        keep &= x >= np.sort(x)[-p.top_k]
    probs = np.exp(x - x.max()) * keep
    probs /= probs.sum()
    if p.top_p < 1:
        order = np.argsort(-probs)
        mass_before = np.cumsum(probs[order]) - probs[order]
        drop = np.zeros_like(keep)
        drop[order[mass_before >= p.top_p]] = True
        keep &= ~drop
    if p.min_p:
        keep &= probs >= p.min_p * probs.max()
    probs = np.exp(x - x.max()) * keep
    return probs / probs.sum()


@pytest.mark.parametrize("params", [
    SamplingParams(), SamplingParams(temperature=0.7), SamplingParams(top_k=5),
    SamplingParams(top_p=0.8), SamplingParams(min_p=0.1),
    SamplingParams(temperature=1.3, top_k=20, top_p=0.9, min_p=0.02)])
def test_sampling_distribution_matches_numpy(params):
    logits = torch.randn(6, 50, generator=torch.Generator().manual_seed(1)) * 3
    ours = sampling_logits(logits, params).softmax(-1).double().numpy()
    for row in range(6):
        np.testing.assert_allclose(ours[row], reference_probs(logits[row].numpy(), params),
                                   atol=1e-6)


def test_greedy_is_a_point_mass_with_zero_entropy():
    logits = torch.randn(3, 10)
    probs = sampling_logits(logits, SamplingParams(temperature=0)).softmax(-1)
    assert torch.equal(probs.argmax(-1), logits.argmax(-1))
    assert torch.allclose(probs.max(-1).values, torch.ones(3))
    assert torch.allclose(entropy_from_logits(sampling_logits(logits, SamplingParams(0))),
                          torch.zeros(3))


def test_entropy_matches_numpy():
    logits = torch.randn(4, 30, dtype=torch.bfloat16) * 4
    x = logits.double().numpy()
    p = np.exp(x - x.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    expected = -(p * np.log(p)).sum(-1)
    np.testing.assert_allclose(entropy_from_logits(logits).numpy(), expected, rtol=1e-5)
    assert entropy_from_logits(logits).dtype == torch.float32


PROMPTS = [[5, 6, 7, 8, 9], [10, 11], [3, 4, 5, 6, 7, 8, 9, 10, 12, 13]]


def test_greedy_batched_with_left_padding_equals_hf_unbatched(model):
    ours = generate(model, Tok(), PROMPTS, SamplingParams(temperature=0), 10, eos_ids=[1])
    for prompt, got in zip(PROMPTS, ours):
        hf = model.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                            generation_config=GenerationConfig(do_sample=False, max_new_tokens=10,
                                                               eos_token_id=1, pad_token_id=0))
        expected = hf[0, len(prompt):].tolist()
        assert got.token_ids == expected[:len(got.token_ids)]
        assert got.finish_reason == ("eos" if got.token_ids[-1] == 1 else "length")


def test_seeded_sampling_is_reproducible_and_seed_dependent(model):
    def run(seed):
        gen = torch.Generator().manual_seed(seed)
        return [g.token_ids for g in generate(model, Tok(), PROMPTS * 3, SamplingParams(), 12,
                                              eos_ids=[1], generator=gen)]
    assert run(3) == run(3)
    assert run(3) != run(4)


def test_finish_reasons_eos_and_stop_string(model):
    # With EOS = every token, each response is one token long and ends with eos.
    out = generate(model, Tok(), PROMPTS, SamplingParams(), 8, eos_ids=list(range(40)))
    assert all(g.finish_reason == "eos" and len(g.token_ids) == 1 for g in out)
    # Stop on any letter: the first token completes the stop string.
    out = generate(model, Tok(), PROMPTS, SamplingParams(), 8, eos_ids=[1],
                   stop=[chr(ord("a") + i) for i in range(26)])
    assert all(g.finish_reason == "stop" and len(g.token_ids) == 1 for g in out)
    out = generate(model, Tok(), PROMPTS, SamplingParams(), 4, eos_ids=[])
    assert all(g.finish_reason == "length" and len(g.token_ids) == 4 for g in out)


def test_sampled_token_frequencies_follow_the_distribution(model):
    """10,000 first tokens from one prompt match the model's top-k distribution (chi-square)."""
    params = SamplingParams(temperature=0.8, top_k=6)
    prompt = [5, 6, 7]
    with torch.no_grad():
        logits = model(torch.tensor([prompt])).logits[0, -1]
    expected = reference_probs(logits.numpy(), params)
    gen = torch.Generator().manual_seed(0)
    first = [g.token_ids[0] for g in generate(model, Tok(), [prompt] * 10_000, params, 1,
                                              eos_ids=[], generator=gen)]
    counts = np.bincount(first, minlength=40)
    support = expected > 0
    assert counts[~support].sum() == 0
    chi2 = (((counts - 10_000 * expected)[support]) ** 2 / (10_000 * expected[support])).sum()
    assert chi2 < 25  # 5 degrees of freedom: p < 0.0002 under the null
