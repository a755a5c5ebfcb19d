"""The sampling distribution and the generation loop, checked independently."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from transformers import GenerationConfig

from rl_onoff.decoding import SamplingParams, entropy_from_logits, sampling_logits
from rl_onoff.generation import (cache_keyword, generate, grow_in_place, left_pad, output_cache,
                                 positions, row_uniforms, sample_seed)


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


@pytest.fixture(scope="module")
def sharp_model(small_llama):
    """small_llama with its output layer scaled x20: logits spread over about 10 nats, so
    temperature and filters change the distribution visibly (small_llama's is nearly flat)."""
    model = small_llama(vocab_size=40)
    with torch.no_grad():
        model.lm_head.weight.mul_(20)
    return model


def test_greedy_batched_with_left_padding_equals_hf_unbatched(model):
    ours = generate(model, Tok(), PROMPTS, SamplingParams(temperature=0), 10, eos_ids=[1])
    for prompt, got in zip(PROMPTS, ours):
        hf = model.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                            generation_config=GenerationConfig(do_sample=False, max_new_tokens=10,
                                                               eos_token_id=1, pad_token_id=0))
        expected = hf[0, len(prompt):].tolist()
        assert got.token_ids == expected[:len(got.token_ids)]
        assert got.finish_reason == ("eos" if got.token_ids[-1] == 1 else "length")
        assert got.sampler_logprobs == [0.0] * len(got.token_ids)


def test_seeded_sampling_is_reproducible_and_seed_dependent(model):
    def run(seed):  # the call form without per-row seeds: rows' seeds drawn from the generator
        gen = torch.Generator().manual_seed(seed)
        return [g.token_ids for g in generate(model, Tok(), PROMPTS * 3, SamplingParams(), 12,
                                              eos_ids=[1], generator=gen)]
    assert run(3) == run(3)
    assert run(3) != run(4)


def test_a_rows_tokens_depend_only_on_its_seed_and_prompt(sharp_model):
    """Batch sizes 1, 3 and 7, other orders and other companions: the same tokens per row."""
    rng = np.random.default_rng(0)
    prompts = [rng.integers(2, 40, rng.integers(2, 12)).tolist() for _ in range(7)]
    seeds = [sample_seed(0, f"q{i}", 0) for i in range(7)]
    params = SamplingParams(temperature=1.2, top_p=0.95)

    def run(rows, seed_of=seeds.__getitem__):
        out = generate(sharp_model, Tok(), [prompts[r] for r in rows], params, 16,
                       eos_ids=[1, 2, 3], seeds=[seed_of(r) for r in rows])
        return {r: (g.token_ids, g.finish_reason, g.sampler_logprobs) for r, g in zip(rows, out)}

    alone = {}
    for row in range(7):
        alone.update(run([row]))
    lengths = [len(ids) for ids, _, _ in alone.values()]
    assert len(set(lengths)) > 2, "rows should end at different steps (and leave the batch)"
    for rows_sets in ([[0, 1, 2, 3, 4, 5, 6]], [[6, 5, 4, 3, 2, 1, 0]],
                      [[4, 0, 2], [6, 1, 5], [3]], [[1, 3, 5], [2, 6, 0], [4]]):
        together = {}
        for rows in rows_sets:
            together.update(run(rows))
        for row in range(7):
            assert together[row][:2] == alone[row][:2], f"row {row} changed with {rows_sets}"
            np.testing.assert_allclose(together[row][2], alone[row][2], atol=1e-5)
    other_seeds = run(list(range(7)), lambda r: sample_seed(1, f"q{r}", 0))
    assert [other_seeds[r][0] for r in range(7)] != [alone[r][0] for r in range(7)]


def test_shrunk_cache_computes_what_the_full_batch_computes(sharp_model):
    prompts = PROMPTS + [[7, 8, 9, 10]]
    ids, mask = left_pad(prompts, 0, "cpu")
    pos = positions(mask)
    keyword = cache_keyword(sharp_model)

    def prefill_cache():
        return output_cache(sharp_model(input_ids=ids, attention_mask=mask, position_ids=pos,
                                        use_cache=True))

    step_ids = torch.tensor([[4], [5], [6], [7]])
    step_mask = torch.cat([mask, torch.ones(4, 1, dtype=torch.long)], dim=1)
    step_pos = pos[:, -1:] + 1
    with torch.no_grad():
        full = sharp_model(input_ids=step_ids, attention_mask=step_mask, position_ids=step_pos,
                           use_cache=True, **{keyword: prefill_cache()}).logits
        keep = torch.tensor([0, 2, 3])
        cache = prefill_cache()
        cache.batch_select_indices(keep)
        shrunk = sharp_model(input_ids=step_ids[keep], attention_mask=step_mask[keep],
                             position_ids=step_pos[keep], use_cache=True,
                             **{keyword: cache}).logits
    torch.testing.assert_close(shrunk, full[keep], atol=1e-5, rtol=1e-5)


def test_growing_cache_computes_what_the_plain_cache_computes(sharp_model):
    """Greedy steps on transformers' own cache and on the same cache grown in place, rows
    dropped half way: the same logits, and the grown layers append into spare room."""
    ids, mask = left_pad(PROMPTS + [[7, 8, 9, 10]], 0, "cpu")
    keyword = cache_keyword(sharp_model)
    runs = {}
    for grow in (False, True):
        step_mask, step_pos = mask, positions(mask)
        with torch.no_grad():
            out = sharp_model(input_ids=ids, attention_mask=mask, position_ids=step_pos,
                              use_cache=True)
            cache = output_cache(out)
            if grow:
                grow_in_place(cache)
            runs[grow] = []
            for step in range(8):
                step_ids = out.logits[:, -1].argmax(-1)
                if step == 4:
                    keep = torch.tensor([0, 2, 3])
                    cache.batch_select_indices(keep)
                    step_mask, step_pos, step_ids = step_mask[keep], step_pos[keep], step_ids[keep]
                step_mask = torch.cat([step_mask, step_mask.new_ones((len(step_ids), 1))], 1)
                step_pos = step_pos[:, -1:] + 1
                out = sharp_model(input_ids=step_ids[:, None], attention_mask=step_mask,
                                  position_ids=step_pos, use_cache=True, **{keyword: cache})
                runs[grow].append(out.logits[:, -1])
    for plain, grown in zip(runs[False], runs[True]):
        torch.testing.assert_close(grown, plain, atol=1e-5, rtol=1e-5)
    for layer in cache.layers:
        assert type(layer).__name__ == "GrowingLayer"
        assert layer.keys.shape[-2] == mask.shape[1] + 8
        assert layer.keys.untyped_storage().nbytes() > layer.keys.numel() * 4  # spare room


def test_dropping_finished_rows_changes_no_token(sharp_model):
    prompts = PROMPTS * 3
    kwargs = dict(eos_ids=[1, 2, 3], seeds=list(range(len(prompts))))
    dropped = generate(sharp_model, Tok(), prompts, SamplingParams(), 20, **kwargs)
    kept = generate(sharp_model, Tok(), prompts, SamplingParams(), 20, drop_finished=False,
                    **kwargs)
    assert len({len(g.token_ids) for g in dropped}) > 2
    for a, b in zip(dropped, kept):
        assert (a.token_ids, a.finish_reason) == (b.token_ids, b.finish_reason)
        np.testing.assert_allclose(a.sampler_logprobs, b.sampler_logprobs, atol=1e-5)


@pytest.mark.parametrize("params", [SamplingParams(temperature=0.7),
                                    SamplingParams(temperature=1.3, top_k=8, top_p=0.9)])
def test_sampler_logprobs_equal_an_independent_recomputation(sharp_model, params):
    """A plain forward pass on prompt + response, without cache or batch, then the sampling
    distribution in float64 numpy."""
    out = generate(sharp_model, Tok(), PROMPTS, params, 12, eos_ids=[1], seeds=[11, 12, 13])
    for prompt, got in zip(PROMPTS, out):
        assert len(got.sampler_logprobs) == len(got.token_ids)
        with torch.no_grad():
            logits = sharp_model(torch.tensor([prompt + got.token_ids])).logits[0].numpy()
        expected = [np.log(reference_probs(logits[len(prompt) - 1 + i], params)[token])
                    for i, token in enumerate(got.token_ids)]
        np.testing.assert_allclose(got.sampler_logprobs, expected, atol=1e-4)


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


def test_a_stop_string_ends_a_row_at_the_token_that_completes_it(sharp_model):
    """Per row: the unstopped response cut at the first prefix whose text holds the string."""
    prompts, seeds, tok = PROMPTS * 2, list(range(6)), Tok()
    free = generate(sharp_model, tok, prompts, SamplingParams(), 30, eos_ids=[], seeds=seeds)
    stop = tok.decode(free[0].token_ids)[6:8]
    stopped = generate(sharp_model, tok, prompts, SamplingParams(), 30, eos_ids=[], seeds=seeds,
                       stop=[stop])
    cuts = [next((n for n in range(1, 31) if stop in tok.decode(f.token_ids[:n])), None)
            for f in free]
    assert cuts[0] is not None and any(c is None for c in cuts), "want rows with and without it"
    for f, s, cut in zip(free, stopped, cuts):
        assert s.token_ids == f.token_ids[:cut]
        assert s.finish_reason == ("length" if cut is None else "stop")


def test_sampled_token_frequencies_follow_the_distribution(sharp_model):
    """10,000 first tokens from one prompt, one seed each, match the top-k distribution at
    temperature 0.8 (chi-square), and the same counts reject temperature 1.0."""
    params = SamplingParams(temperature=0.8, top_k=6)
    prompt, draws = [5, 6, 7], 10_000
    with torch.no_grad():
        logits = sharp_model(torch.tensor([prompt])).logits[0, -1].numpy()
    first = [g.token_ids[0] for g in generate(sharp_model, Tok(), [prompt] * draws, params, 1,
                                              eos_ids=[], seeds=list(range(draws)))]
    counts = np.bincount(first, minlength=40)

    def chi2(expected):
        support = expected > 0
        assert counts[~support].sum() == 0
        return (((counts - draws * expected)[support]) ** 2 / (draws * expected[support])).sum()

    assert chi2(reference_probs(logits, params)) < 25  # 5 degrees of freedom: p < 0.0002
    assert chi2(reference_probs(logits, SamplingParams(temperature=1.0, top_k=6))) > 60


def splitmix64(x: int) -> int:
    """Vigna's splitmix64 finaliser in Python's unbounded unsigned integers."""
    mask = (1 << 64) - 1
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & mask
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & mask
    return x ^ (x >> 31)


def test_row_uniforms_follow_unsigned_splitmix64():
    """torch has signed int64 only; the stream must equal the unsigned 64-bit arithmetic."""
    seeds = [0, 1, 12345, 2**62 + 3, 2**63 - 1, 2**63, 2**64 - 7]
    signed = torch.tensor([s - 2**64 if s >= 2**63 else s for s in seeds])
    for step in (0, 1, 7, 10**6):
        state = [(splitmix64(s) + (step + 1) * 0x9E3779B97F4A7C15) % 2**64 for s in seeds]
        expected = [((splitmix64(x) >> 11) + 1) / 2**53 for x in state]
        assert row_uniforms(signed, step).tolist() == expected
    many = row_uniforms(torch.arange(100_000), 3).numpy()
    assert many.min() > 0 and many.max() <= 1
    assert abs(many.mean() - 0.5) < 0.005 and abs(many.var() - 1 / 12) < 0.002


def test_sample_seed_is_a_stable_hash_of_its_three_parts():
    # fixed forever: stored runs are reproduced (and resumed) from these seeds
    assert sample_seed(0, "arith-test-000004", 3) == 4449205508420807845
    assert sample_seed(1, "23", 4) != sample_seed(12, "3", 4) != sample_seed(1, "2", 34)
    seeds = {sample_seed(seed, f"q{q}", s) for seed in range(3) for q in range(50) for s in range(8)}
    assert len(seeds) == 3 * 50 * 8 and all(0 <= s < 2**63 for s in seeds)


def test_seeds_are_checked_and_the_cache_api_is_current(model):
    with pytest.raises(ValueError, match="one seed per prompt"):
        generate(model, Tok(), PROMPTS, SamplingParams(), 2, eos_ids=[], seeds=[1, 2])
    with pytest.raises(ValueError, match="not both"):
        generate(model, Tok(), PROMPTS, SamplingParams(), 2, eos_ids=[], seeds=[1, 2, 3],
                 generator=torch.Generator())
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # transformers' deprecations
        generate(model, Tok(), PROMPTS, SamplingParams(), 3, eos_ids=[], seeds=[1, 2, 3])
