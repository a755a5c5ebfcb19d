"""One model loader: bundled name, local path, hub id (offline: a clear error)."""

from __future__ import annotations

import pytest
import torch

from rl_onoff.data import load_dataset
from rl_onoff.models import ModelLoadError, bundled_models, load_model, resolve_dtype
from rl_onoff.tasks import build_prompt, encode_prompt


def test_tiny_arith_is_bundled_small_and_loads_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert "tiny-arith" in bundled_models()
    model, tokenizer = load_model("tiny-arith")
    assert model.device.type == "cpu" and model.dtype == torch.float32
    assert sum(p.numel() for p in model.parameters()) < 5_000_000
    assert tokenizer.padding_side == "left" and tokenizer.pad_token_id != tokenizer.eos_token_id
    # digits are single tokens
    ids = tokenizer("12345", add_special_tokens=False)["input_ids"]
    assert len(ids) == 5


def test_tiny_arith_answers_an_easy_problem_greedily():
    """A real trained model: on level-1 problems greedy decoding is mostly right."""
    from rl_onoff.decoding import SamplingParams
    from rl_onoff.generation import generate
    from rl_onoff.tasks import score

    model, tokenizer = load_model("tiny-arith")
    records = load_dataset("arith", "test", levels=[1], num_examples=20)
    prompts = [encode_prompt(build_prompt(r["question"], tokenizer), tokenizer, "auto")
               for r in records]
    out = generate(model, tokenizer, prompts, SamplingParams(temperature=0), 64)
    texts = [tokenizer.decode(g.token_ids, skip_special_tokens=True) for g in out]
    right = sum(score(t, r["answer"]) for t, r in zip(texts, records))
    assert right >= 15, texts[:3]
    assert all(g.finish_reason == "eos" for g in out)


def test_local_path_without_config_is_explained(tmp_path):
    with pytest.raises(ModelLoadError, match="has no config.json"):
        load_model(str(tmp_path))


def test_unreachable_hub_id_says_how_to_use_a_local_copy(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError) as info:
        load_model("Qwen/Qwen2.5-Math-1.5B-Instruct")
    message = str(info.value)
    assert "Qwen/Qwen2.5-Math-1.5B-Instruct" in message
    assert "--local-dir" in message and "defaults.model" in message


def test_auto_dtype_is_float32_on_cpu():
    assert resolve_dtype("auto", "cpu") == torch.float32
    assert resolve_dtype("bfloat16", "cpu") == torch.bfloat16
    with pytest.raises(ValueError, match="allowed auto, float32"):
        resolve_dtype("fp8", "cpu")


def test_each_local_rank_gets_its_own_block_of_gpus():
    """N replicas of M GPUs on a node: rank r takes GPUs r*M .. r*M+M-1, never a shared one."""
    from rl_onoff.models import replica_gpus

    blocks = [replica_gpus(rank, 2, 8) for rank in range(4)]
    assert blocks == [[0, 1], [2, 3], [4, 5], [6, 7]]
    with pytest.raises(ModelLoadError, match="needs 10 GPUs, it has 8"):
        replica_gpus(4, 2, 8)


def test_gpus_per_model_needs_a_gpu_device(write_config):
    from rl_onoff.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="defaults.gpus_per_model: 2 GPUs per model need"):
        load_config(write_config({"defaults": {"gpus_per_model": 2, "device": "cpu"}}))
