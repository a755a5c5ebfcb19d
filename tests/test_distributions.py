"""01-dist: exact per-token statistics, batching invariance, output format and the lazy loader.

A tiny random Llama (byte-level BPE tokenizer) is built in code; 00-sample
samples from it with temperature, top-k, top-p and a stop string (so lengths
vary), and 01-dist scores the result. Expectations are computed independently
from the model's plain, unbatched forward pass with float64 numpy.
"""

from __future__ import annotations

import pickle
import tracemalloc
import zipfile

import numpy as np
import pytest
import torch

from rl_onoff import io
from rl_onoff.config import ConfigError, load_config
from rl_onoff import decoding
from rl_onoff.decoding import SamplingParams, sampled_stats, sampling_logits, top_k_of
from rl_onoff.distributions import gap, load_distributions, run_dist
from rl_onoff.distributions.extract import ReusedHead, check_lm_head, extract, plan_batches
from rl_onoff.distributions.pipeline import display_strings, with_model
from rl_onoff.distributions import store
from rl_onoff.distributions.store import FlatArrays, array_specs
from rl_onoff.models import load_model

SAMPLING = {"temperature": 0.8, "top_p": 0.9, "top_k": 50, "min_p": 0.0}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from rl_onoff.data import arith
    from rl_onoff.models.train_tiny import build_model, save, train_tokenizer

    torch.manual_seed(0)
    tokenizer = train_tokenizer(arith.generate("train", 300, seed=0))
    out = tmp_path_factory.mktemp("tiny-random")
    save(build_model(tokenizer), tokenizer, out)
    return out


@pytest.fixture(scope="module")
def model(model_dir):
    return load_model(str(model_dir), "cpu", "float32")


def overrides(model_dir, root, **dist) -> list[str]:
    items = [f"defaults.model={model_dir}", f"defaults.tracking.root={root / 'runs'}",
             "defaults.device=cpu", "00_sample.dataset.num_examples=3", "00_sample.num_samples=3",
             "00_sample.sampling.max_new_tokens=12", "00_sample.sampling.stop=[' ']",
             "00_sample.task.reward_workers=1",
             f"00_sample.output_dir={root / '00'}", f"01_dist.input={root / '00'}",
             f"01_dist.output_dir={root / '01'}"]
    items += [f"00_sample.sampling.{k}={v}" for k, v in SAMPLING.items()]
    return items + [f"01_dist.{k}={v}" for k, v in dist.items()]


@pytest.fixture(scope="module")
def scored(model_dir, tmp_path_factory):
    """(root, 00's results, 01's summary): one 00 run, scored by 01 with top_k 5."""
    from rl_onoff.sample.run import run_sample

    root = tmp_path_factory.mktemp("pipeline")
    run_sample(load_config(None, overrides(model_dir, root)))
    summary = run_dist(load_config(None, overrides(model_dir, root, top_k=5, high_entropy_top=3)))
    return root, io.read_json(root / "00" / "results.json"), summary


def sequences_of(results) -> list[tuple[list[int], list[int]]]:
    return [(q["prompt_token_ids"], s["token_ids"]) for q in results["questions"]
            for s in q["samples"]]


def run_extract(model, sequences, params, top_k, token_budget) -> list[dict]:
    """extract's output regrouped per sequence."""
    per_sequence = [None] * len(sequences)
    for batch, chunks in extract(model, sequences, params, top_k, token_budget):
        parts = [stats for _, stats in chunks]
        merged = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        ends = np.cumsum([len(sequences[i][1]) for i in batch])
        for i, end in zip(batch, ends):
            per_sequence[i] = {k: v[end - len(sequences[i][1]):end] for k, v in merged.items()}
    return per_sequence


def softmax64(z: np.ndarray) -> np.ndarray:
    z = z - z.max()
    e = np.exp(z)
    return e / e.sum()


def entropy64(z: np.ndarray) -> float:
    p = softmax64(z)
    nz = p > 0
    return float(-(p[nz] * np.log(p[nz])).sum())


def sampled_logprobs64(logits: np.ndarray, temperature, top_p, top_k, min_p) -> np.ndarray:
    """Log-probabilities of the sampled distribution from the definitions, by a full sort in
    float64: temperature, top-k (ties with the k-th kept), top-p (a token stays when the tokens
    strictly more likely hold less than top_p), min-p; greedy: the first argmax."""
    z = np.asarray(logits, np.float64)
    if temperature == 0:
        out = np.full(len(z), -np.inf)
        out[np.argmax(z)] = 0.0
        return out
    keep = np.ones(len(z), bool)
    if 0 < top_k < len(z):
        keep &= z >= np.sort(z)[-top_k]
    if top_p < 1:
        p = np.where(keep, softmax64(z / temperature), 0.0)
        p /= p.sum()
        order = np.argsort(-z, kind="stable")
        values, mass = z[order], np.cumsum(p[order]) - p[order]
        first = np.searchsorted(-values, -values, side="left")  # each tie group's first place
        above = np.empty(len(z))
        above[order] = mass[first]
        keep &= above < top_p
    if min_p > 0:
        keep &= z / temperature - (z / temperature).max() >= np.log(min_p)
    s = np.where(keep, z / temperature, -np.inf)
    return s - s.max() - np.log(np.exp(s - s.max()).sum())


def sampled_entropy64(logits: np.ndarray, *params) -> float:
    logp = sampled_logprobs64(logits, *params)
    kept = np.isfinite(logp)
    return float(-(np.exp(logp[kept]) * logp[kept]).sum())


def reference(model, prompt, response) -> np.ndarray:
    """fp32 logits predicting each response token, from one plain unbatched forward pass."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([prompt + response])).logits[0]
    return logits[len(prompt) - 1:len(prompt) + len(response) - 1].numpy()


# ---------------------------------------------------------------------------
# the extraction


def test_statistics_match_an_independent_computation(model, scored):
    net, _ = model
    _, results, _ = scored
    sequences = sequences_of(results)[:4] + [(results["questions"][0]["prompt_token_ids"],
                                              list(range(40, 90)))]
    params = SamplingParams(temperature=0.7, top_p=0.9, top_k=60, min_p=0.05)
    got = run_extract(net, sequences, params, top_k=5, token_budget=10_000)
    for (prompt, response), stats in zip(sequences, got):
        logits = reference(net, prompt, response)
        for t, token in enumerate(response):
            row = logits[t].astype(np.float64)
            p = softmax64(row)
            assert stats["entropy"][t] == pytest.approx(entropy64(row), abs=1e-4)
            assert stats["logprob"][t] == pytest.approx(np.log(p[token]), abs=1e-4)
            assert stats["rank"][t] == int((logits[t] > logits[t, token]).sum())
            top = np.argsort(-logits[t], kind="stable")[:5]
            assert stats["topk_ids"][t].tolist() == top.tolist()
            np.testing.assert_allclose(stats["topk_probs"][t], p[top], atol=1e-6)
            expected = sampled_entropy64(row, params.temperature, params.top_p, params.top_k,
                                         params.min_p)
            assert stats["sampled_entropy"][t] == pytest.approx(expected, abs=1e-4)
            expected = sampled_logprobs64(row, params.temperature, params.top_p, params.top_k,
                                          params.min_p)[token]
            assert stats["sampled_logprob"][t] == pytest.approx(expected, abs=1e-4)
    ranks = np.concatenate([s["rank"] for s in got])
    assert (ranks >= 5).any() and (ranks < 5).any()  # both ways of counting the rank ran


def test_batching_padding_and_chunking_change_no_value(model, scored, monkeypatch):
    net, _ = model
    _, results, _ = scored
    sequences = sequences_of(results)
    assert len({len(p) + len(r) for p, r in sequences}) > 2  # padding happens
    params = SamplingParams(**SAMPLING)
    alone = run_extract(net, sequences, params, top_k=8, token_budget=1)
    monkeypatch.setattr("rl_onoff.distributions.extract.CHUNK_BYTES", 3 * 4 * 512)
    together = run_extract(net, sequences, params, top_k=8, token_budget=100_000)
    for a, b in zip(alone, together):
        for name in a:
            if a[name].dtype.kind == "f":
                np.testing.assert_allclose(a[name], b[name], atol=1e-5, err_msg=name)
            else:
                np.testing.assert_array_equal(a[name], b[name], err_msg=name)


@pytest.mark.parametrize("bias", [False, True])
def test_reused_head_output_equals_the_module_call(bias):
    """Bit for bit, across calls of shrinking and growing sizes; an earlier call's logits
    are overwritten (the buffer is reused), which extract relies on consuming in time."""
    torch.manual_seed(0)
    linear = torch.nn.Linear(16, 300, bias=bias)
    head = ReusedHead(linear)
    first_hidden = torch.randn(7, 16)
    with torch.inference_mode():
        first = head(first_hidden)
        assert torch.equal(first, linear(first_hidden))
        for rows in (3, 7, 11):
            hidden = torch.randn(rows, 16)
            assert torch.equal(head(hidden), linear(hidden))
        assert not torch.equal(first, linear(first_hidden))  # reused, not fresh
        other = torch.nn.Sequential(linear)  # not a plain Linear: called as it is
        assert torch.equal(ReusedHead(other)(first_hidden), linear(first_hidden))
        # a replaced forward (as accelerate's device_map installs) or a hook is respected
        hooked = torch.nn.Linear(16, 300, bias=bias)
        hooked.load_state_dict(linear.state_dict())
        hooked.forward = lambda x: torch.nn.Linear.forward(hooked, x) + 1
        assert torch.equal(ReusedHead(hooked)(first_hidden), linear(first_hidden) + 1)
        hooked = torch.nn.Linear(16, 300, bias=bias)
        hooked.load_state_dict(linear.state_dict())
        hooked.register_forward_hook(lambda module, args, output: output * 2)
        assert torch.equal(ReusedHead(hooked)(first_hidden), linear(first_hidden) * 2)
    graded = head(first_hidden)  # gradients on: a plain call, with its graph
    assert graded.requires_grad and torch.equal(graded, linear(first_hidden))


@pytest.mark.parametrize("vocab", [100, 1000, 64 * 21, 151_936])
@pytest.mark.parametrize("k", [1, 5, 20])
def test_blocked_top_k_equals_torch_topk(vocab, k):
    logits = torch.randn(6, vocab, generator=torch.Generator().manual_seed(vocab + k))
    values, ids = top_k_of(logits, k)
    expected = logits.topk(k, -1)
    assert torch.equal(values, expected.values) and torch.equal(ids, expected.indices)
    tied = logits.bfloat16().float()  # bf16 logits tie often: equal values, ids may differ
    values, ids = top_k_of(tied, k)
    assert torch.equal(values, tied.topk(k, -1).values)
    assert torch.equal(tied.gather(1, ids), values)


FILTERS = [SamplingParams(temperature=0), SamplingParams(temperature=0.6),
           SamplingParams(temperature=0.6, top_p=0.95), SamplingParams(top_p=1e-9),
           SamplingParams(temperature=1.3, top_p=0.5, top_k=100_000),
           SamplingParams(temperature=0.7, top_p=0.9, top_k=50, min_p=0.05),
           SamplingParams(temperature=0.8, top_p=0.99, min_p=0.1),
           SamplingParams(temperature=0.6, top_k=3),
           SamplingParams(temperature=0.6, top_p=0.95, top_k=4000),
           SamplingParams(temperature=1.0, top_p=0.999)]


@pytest.mark.parametrize("params", FILTERS, ids=str)
def test_filters_equal_a_full_sort(params, monkeypatch):
    """Block and histogram paths against the full-sort definitions, on peaked and flat rows
    with ties (logits on a grid of 1/4) and without (where a threshold one token off shows),
    a vocabulary that is no multiple of 64 and the real 151,936."""
    calls = []
    histogram = decoding._histogram_threshold
    monkeypatch.setattr(decoding, "_histogram_threshold",
                        lambda *a, **k: calls.append(1) or histogram(*a, **k))
    gen = torch.Generator().manual_seed(0)
    for vocab, scale, grid in ((5000, 4.0, 4), (5000, 0.3, 4), (151_936, 0.3, 4),
                               (151_936, 0.3, None)):
        logits = torch.randn(4, vocab, generator=gen) * scale
        if grid:
            logits = (logits * grid).round() / grid
        targets = torch.randint(0, vocab, (4,), generator=gen)
        targets[:2] = logits[:2].argmax(-1)
        entropy, logprob = sampled_stats(logits - logits.amax(-1, keepdim=True), targets,
                                         params)
        kept = sampling_logits(logits, params).isfinite()
        for row in range(4):
            expected = sampled_logprobs64(logits[row].numpy(), params.temperature,
                                          params.top_p, params.top_k, params.min_p)
            np.testing.assert_array_equal(kept[row].numpy(), np.isfinite(expected))
            assert float(logprob[row]) == pytest.approx(expected[targets[row]], abs=2e-5)
            assert float(entropy[row]) == pytest.approx(
                sampled_entropy64(logits[row].numpy(), params.temperature, params.top_p,
                                  params.top_k, params.min_p), abs=2e-5)
    if 0.95 <= params.top_p < 1:  # flat rows' nuclei reach past the first block
        assert calls


def test_plan_batches_fits_the_budget_longest_first():
    lengths = [5, 30, 12, 12, 7, 100, 1]
    batches = plan_batches(lengths, token_budget=40)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    assert batches[0] == [5]  # longer than the budget: alone, and first
    for batch in batches[1:]:
        assert len(batch) * max(lengths[i] for i in batch) <= 40
        assert lengths[batch[0]] == max(lengths[i] for i in batch)


def test_lm_head_check_catches_rescaled_logits(model, scored, monkeypatch):
    net, _ = model
    sequence = sequences_of(scored[1])[0]
    check_lm_head(net, sequence)
    forward = net.forward

    def soft_capped(*args, **kwargs):  # like Gemma-2: the logits change after the lm_head
        out = forward(*args, **kwargs)
        out.logits = 5 * torch.tanh(out.logits / 5)
        return out

    monkeypatch.setattr(net, "forward", soft_capped)
    with pytest.raises(RuntimeError, match="does not reproduce"):
        check_lm_head(net, sequence)


# ---------------------------------------------------------------------------
# the pipeline and its output


def test_output_holds_00s_exact_tokens_and_consistent_scalars(scored):
    root, results, summary = scored
    dist = load_distributions(root / "01")
    meta = dist.meta
    assert {"model", "sampled_by", "generation", "sampling_params", "arrays", "questions",
            "summary", "token_strings", "plots"} <= set(meta)
    assert meta["sampling_params"] == SAMPLING
    total = 0
    for q, question in enumerate(results["questions"]):
        for s, sample in enumerate(question["samples"]):
            arrays = dist.sample(q, s)
            assert arrays["token_ids"].tolist() == sample["token_ids"]
            assert arrays["topk_ids"].shape == (len(sample["token_ids"]), 5)
            record = dist.record(q, s)
            assert record["reward"] == sample["reward"] and record["text"] == sample["text"]
            assert record["mean_entropy"] == pytest.approx(float(arrays["entropy"].mean()))
            assert record["max_entropy"] == pytest.approx(float(arrays["entropy"].max()))
            top = record["high_entropy_positions"]
            assert len(top) == min(3, len(sample["token_ids"]))
            assert arrays["entropy"][top[0]] == arrays["entropy"].max()
            listed = np.flatnonzero(arrays["rank"] < 5)  # the sampled token is among the top 5
            np.testing.assert_array_equal(
                arrays["topk_ids"][listed, arrays["rank"][listed]], arrays["token_ids"][listed])
            np.testing.assert_allclose(arrays["topk_probs"][listed, arrays["rank"][listed]],
                                       np.exp(arrays["logprob"][listed]), rtol=1e-5)
            total += len(sample["token_ids"])
    assert meta["num_tokens"] == total == summary["num_tokens"]
    # temperature 0.8, top-k 50, top-p 0.9 sample from a narrower distribution than T=1
    assert summary["mean_sampled_entropy"] < summary["mean_entropy"]
    assert sum(summary["histogram"]["entropy"]) == total
    assert sum(summary["by_position"]["count"]) == total
    assert summary["forking_tokens"]["tokens"]
    for name in meta["plots"].values():
        assert (root / "01" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (root / "01" / "run_config.json").is_file()
    assert not list((root / "01").glob(".01-dist-scratch-*"))


def test_token_strings_show_spaces_newlines_and_bytes(model):
    _, tokenizer = model
    ids = tokenizer(" 12 +\n ✓")["input_ids"] + [tokenizer.eos_token_id]
    strings = display_strings(tokenizer, ids)
    # ✓ (bytes e2 9c 93) is no token of the tiny vocabulary: its pieces show their bytes
    assert "".join(strings[i] for i in ids) == " 12 +\n \\xe2\\x9c\\x93<|endoftext|>"
    assert not any(c in s for s in strings.values() for c in "ĠĊ\ufffd")


def test_full_distribution_is_refused_above_the_limit_and_exact_below(model_dir, scored):
    root = scored[0]
    base = overrides(model_dir, root) + ["01_dist.top_k=null",
                                         f"01_dist.output_dir={root / 'full'}"]
    with pytest.raises(ConfigError, match="full_distribution_limit_gb"):
        run_dist(load_config(None, base + ["01_dist.full_distribution_limit_gb=0.00001"]))
    assert not (root / "full" / "distributions.npz").exists()
    run_dist(load_config(None, base))
    full, topk = load_distributions(root / "full"), load_distributions(root / "01")
    assert full.names[:6] == ["token_ids", "entropy", "sampled_entropy", "logprob",
                              "sampled_logprob", "rank"]
    assert "probs" in full.names and "topk_ids" not in full.names
    probs = full.array("probs")
    assert probs.shape == (full.meta["num_tokens"], full.meta["vocab_size"])
    np.testing.assert_allclose(probs.sum(1), 1, atol=1e-5)
    ids = full.array("token_ids")
    np.testing.assert_allclose(np.log(probs[np.arange(len(ids)), ids]), full.array("logprob"),
                               atol=1e-5)
    np.testing.assert_allclose(np.sort(probs, 1)[:, ::-1][:, :5], topk.array("topk_probs"),
                               atol=1e-6)


def test_model_null_means_00s_model(model_dir, scored):
    root, results, _ = scored
    config = with_model(load_config(None, overrides(model_dir, root) + ["01_dist.model=null"]),
                        results)
    assert config["01_dist"].model == results["model"]["name"]
    kept = with_model(load_config(None, overrides(model_dir, root) + ["01_dist.model=other"]),
                      results)
    assert kept["01_dist"].model == "other"


@pytest.mark.parametrize("key, value, allowed", [
    ("top_k", 0, "positive integer, or null"), ("forking_quantile", 1.5, "0 < forking_quantile"),
    ("full_distribution_limit_gb", 0, "positive number"), ("token_budget", 0, "positive")])
def test_config_errors_name_the_key(key, value, allowed):
    with pytest.raises(ConfigError, match=f"01_dist.{key}.*{allowed}"):
        load_config(None, [f"01_dist.{key}={value}"])


# ---------------------------------------------------------------------------
# the loader


def write_output(directory, lengths: list[int], top_k: int, seed: int = 0) -> dict:
    """A synthetic 01 output: random arrays and the JSON index that describes them."""
    rng = np.random.default_rng(seed)
    specs = array_specs(sum(lengths), top_k, 1000)
    values = {name: rng.integers(0, 1000, shape).astype(dtype) if dtype.kind == "i"
              else rng.random(shape, dtype=np.float32) for name, (dtype, shape) in specs.items()}
    with FlatArrays(directory, specs) as arrays:
        arrays.write(np.arange(sum(lengths)), values)
        arrays.save(directory / "distributions.npz")
    starts = np.cumsum(lengths) - lengths
    io.write_json(directory / "distributions.json", {
        "arrays": {n: {"dtype": str(d), "shape": list(s)} for n, (d, s) in specs.items()},
        "token_strings": {"7": " x"},
        "questions": [{"samples": [{"start": int(a), "length": int(n)}
                                   for a, n in zip(starts, lengths)]}]})
    return values


def test_loader_reads_only_what_is_asked_and_never_unpickles(tmp_path, monkeypatch):
    lengths = [300] * 1000  # 300k tokens, ~54 MB of arrays
    values = write_output(tmp_path, lengths, top_k=20)
    banned = lambda *a, **k: pytest.fail("the loader unpickled something")  # noqa: E731
    monkeypatch.setattr(pickle, "load", banned)
    monkeypatch.setattr(pickle, "loads", banned)
    tracemalloc.start()
    dist = load_distributions(tmp_path / "distributions.json")
    sample = dist.sample(0, 777)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 2_000_000, f"opening and reading one sample allocated {peak} bytes"
    rows = slice(777 * 300, 778 * 300)
    for name, value in values.items():
        np.testing.assert_array_equal(sample[name], value[rows])
    assert isinstance(dist.array("topk_probs"), np.memmap)
    assert dist.token_string(7) == " x"
    with np.load(tmp_path / "distributions.npz", allow_pickle=False) as npz:
        np.testing.assert_array_equal(npz["topk_ids"], dist.array("topk_ids"))


def test_loader_refuses_objects_compression_and_mismatched_files(tmp_path):
    write_output(tmp_path, [4, 5], top_k=3)
    npz = tmp_path / "distributions.npz"
    with zipfile.ZipFile(npz, "w") as archive:  # same names, pickled objects inside
        with archive.open("entropy.npy", "w") as handle:
            np.lib.format.write_array(handle, np.array([{"x": 1}], dtype=object))
    with pytest.raises(ValueError, match="unpickle"):
        load_distributions(tmp_path).array("entropy")
    np.savez_compressed(npz, entropy=np.zeros(9, np.float32))
    with pytest.raises(ValueError, match="compressed"):
        load_distributions(tmp_path).array("entropy")
    np.savez(npz, entropy=np.zeros(10, np.float32))
    with pytest.raises(ValueError, match="different runs"):
        load_distributions(tmp_path).array("entropy")


def test_loader_catches_bytes_overwritten_inside_the_npz(tmp_path):
    """A flipped byte in the middle of a member fails its CRC-32, naming the array."""
    write_output(tmp_path, [300] * 20, top_k=4)
    npz = tmp_path / "distributions.npz"
    offset, *_ = store.npz_members(npz)["entropy"]
    data = bytearray(npz.read_bytes())
    data[offset + 1000] ^= 0xFF
    npz.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="'entropy' is damaged.*rerun exp/01-dist.py"):
        load_distributions(tmp_path)
    assert load_distributions(tmp_path, verify=False).array("entropy")[0] is not None


def test_loader_reads_rows_of_fortran_ordered_arrays(tmp_path):
    values = write_output(tmp_path, [4, 5], top_k=3)
    np.savez(tmp_path / "distributions.npz", **{k: np.asfortranarray(v) for k, v in values.items()})
    sample = load_distributions(tmp_path).sample(0, 1)
    for name, value in values.items():
        np.testing.assert_array_equal(sample[name], value[4:9])


# ---------------------------------------------------------------------------
# the sampler-vs-trainer gap


def with_sampler_logprobs(model, results, root, name, shift=None) -> str:
    """A copy of 00's results whose sampler_logprobs come from a plain unbatched forward pass
    and the numpy definitions of the filters (plus `shift`, a function of the flat token
    position, when given); returns the copy's directory."""
    net, _ = model
    g = results["generation"]
    results = {**results, "questions": [dict(q) for q in results["questions"]]}
    position = 0
    for question in results["questions"]:
        question["samples"] = [dict(s) for s in question["samples"]]
        for sample in question["samples"]:
            logits = reference(net, question["prompt_token_ids"], sample["token_ids"])
            values = []
            for row, token in zip(logits, sample["token_ids"]):
                value = sampled_logprobs64(row, g["temperature"], g["top_p"], g["top_k"],
                                           g["min_p"])[token]
                values.append(float(value + (shift(position) if shift else 0.0)))
                position += 1
            sample["sampler_logprobs"] = values
    io.write_json(root / name / "results.json", results)
    return str(root / name)


def run_gap(model_dir, root, source: str, name: str) -> dict:
    run_dist(load_config(None, overrides(model_dir, root) + [
        f"01_dist.input={source}", f"01_dist.output_dir={root / name}"]))
    return load_distributions(root / name)


def test_sampler_gap_is_zero_for_an_independent_sampler_and_moves_by_what_is_planted(
        model, model_dir, scored):
    root, results, _ = scored
    exact = run_gap(model_dir, root, with_sampler_logprobs(model, results, root, "in-exact"),
                    "gap-exact")
    first = exact.meta["sampler_gap"]
    assert first["num_excluded_by_trainer"] == 0
    assert first["max_abs_delta"] < 1e-4 and first["kl_k3"] < 1e-8
    assert first["frac_ratio_outside_0.5_2"] == 0
    assert "sampler_delta" in exact.names  # the loader exposes it, per sample
    delta = exact.sample(1, 2)["sampler_delta"]
    assert delta.dtype == np.float32 and len(delta) == len(results["questions"][1]["samples"][2]
                                                           ["token_ids"])
    assert (root / "gap-exact" / exact.meta["plots"]["sampler_gap"]).is_file()

    planted = np.log(3)  # 0.1 nats on every token, and log 3 more on the first one
    moved = run_gap(model_dir, root, with_sampler_logprobs(
        model, results, root, "in-shifted", lambda i: 0.1 + planted * (i == 0)), "gap-shifted")
    second, tokens = moved.meta["sampler_gap"], first["num_tokens"]
    assert second["mean_delta"] - first["mean_delta"] == pytest.approx(
        0.1 + planted / tokens, abs=1e-5)
    assert second["max_abs_delta"] == pytest.approx(0.1 + planted, abs=1e-4)
    assert second["frac_ratio_outside_0.5_2"] == pytest.approx(1 / tokens)
    r = np.exp(-np.r_[0.1 + planted, np.full(tokens - 1, 0.1)])
    assert second["kl_k3"] == pytest.approx(np.mean(r - 1 - np.log(r)), abs=1e-4)
    ratios = second["per_sequence"]["importance_ratio_quantiles"]
    lengths = [len(s["token_ids"]) for q in results["questions"] for s in q["samples"]]
    assert ratios["0.99"] == pytest.approx(np.exp(-0.1 * min(lengths)), rel=1e-3)
    np.testing.assert_allclose(moved.array("sampler_delta") - exact.array("sampler_delta"),
                               0.1 + planted * (np.arange(tokens) == 0), atol=1e-5)


def test_sampler_gap_counts_tokens_the_trainer_drops(model, model_dir, scored):
    """00's log-probs scored under a narrower transform (top-k 1): the tokens that are not the
    argmax become impossible for the trainer; counted, never NaN."""
    root, results, _ = scored
    source = with_sampler_logprobs(model, results, root, "in-narrow")
    narrowed = io.read_json(f"{source}/results.json")
    narrowed["generation"] = {**narrowed["generation"], "top_k": 1}
    io.write_json(f"{source}/results.json", narrowed)
    dist = run_gap(model_dir, root, source, "gap-narrow")
    summary, rank = dist.meta["sampler_gap"], dist.array("rank")
    assert summary["num_excluded_by_trainer"] == int((rank > 0).sum()) > 0
    delta = dist.array("sampler_delta")
    assert np.isposinf(delta[rank > 0]).all() and not np.isnan(delta).any()
    assert summary["frac_ratio_outside_0.5_2"] >= (rank > 0).mean()
    assert summary["per_sequence"]["num_with_excluded_token"] > 0


def test_gap_summary_from_the_definitions():
    delta = np.array([0.1, -0.2, np.inf, 0.0, 0.9], np.float32)
    got = gap.summarize(delta, np.array([2, 3]))
    finite = np.array([0.1, -0.2, 0.0, 0.9])
    assert got["mean_delta"] == pytest.approx(finite.mean(), abs=1e-7)
    assert got["mean_abs_delta"] == pytest.approx(np.abs(finite).mean(), abs=1e-7)
    assert got["kl_k3"] == pytest.approx(np.mean(np.exp(-finite) - 1 + finite), abs=1e-7)
    assert got["frac_ratio_outside_0.5_2"] == 2 / 5  # the dropped token and exp(-0.9) < 0.5
    assert got["per_sequence"]["importance_ratio_quantiles"]["0.01"] == 0.0  # second sequence
    assert got["per_sequence"]["log_importance_ratio_quantiles"]["0.5"] == pytest.approx(0.1)
    assert sum(got["histogram"]["counts"]) == 4
