"""Shared fixtures: tiny random models built in code, configs written to tmp dirs."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

@pytest.fixture(scope="session")
def tiny_random_model(tmp_path_factory) -> str:
    """A random-initialised Llama with the arith tokenizer, saved like a hub checkpoint."""
    import torch

    from rl_onoff.data import arith
    from rl_onoff.models import train_tiny

    torch.manual_seed(0)
    tokenizer = train_tiny.train_tokenizer(arith.generate("train", 500))
    model = train_tiny.build_model(tokenizer)
    out = tmp_path_factory.mktemp("tiny_random")
    train_tiny.save(model, tokenizer, out)
    return str(out)


@pytest.fixture(scope="session")
def small_llama():
    """Builds a seeded random 2-layer Llama (hidden 32, 4 heads, 2 KV heads; pad 0, EOS 1),
    small enough that tests can check it against independent computations."""
    def build(vocab_size: int):
        import torch
        from transformers import LlamaConfig, LlamaForCausalLM

        torch.manual_seed(0)
        return LlamaForCausalLM(LlamaConfig(
            vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, pad_token_id=0, eos_token_id=1)).eval()
    return build


@pytest.fixture
def write_config(tmp_path):
    """Write a YAML (a dict) to tmp_path; outputs and run records default into tmp_path."""
    def write(data: dict, name: str = "config.yaml") -> Path:
        data = {**data}
        defaults = data.setdefault("defaults", {})
        defaults.setdefault("tracking", {}).setdefault("root", str(tmp_path / "runs"))
        path = tmp_path / name
        path.write_text(yaml.safe_dump(data))
        return path
    return write
