"""Reward models by path: outcome (one score) and process (the lowest step's P(good)), each
checked against a plain forward pass of the same tiny model, written out in the test."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rl_onoff import rewards
from rl_onoff.rewards import Response

QUESTION = "Ann has 2 apples. She gets 3 more. How many?"
TEXTS = ["2 + 3 = 5\nThe answer is \\boxed{5}.", "2 + 3 = 6\n6 - 1 = 5\nThe answer is \\boxed{5}."]


def responses():
    return [Response(t, "5", 10, "eos", 96, "ok", True, QUESTION) for t in TEXTS]


def tiny_reward_model(tmp_path, head: str):
    from transformers import (LlamaConfig, LlamaForSequenceClassification,
                              LlamaForTokenClassification)

    from rl_onoff.data import arith
    from rl_onoff.models import train_tiny

    tokenizer = train_tiny.train_tokenizer(arith.generate("train", 300))
    tokenizer.add_special_tokens({"additional_special_tokens": ["<extra_0>"]})
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         pad_token_id=tokenizer.pad_token_id,
                         num_labels=1 if head == "outcome" else 2)
    cls = LlamaForSequenceClassification if head == "outcome" else LlamaForTokenClassification
    model = cls(config).eval()
    path = tmp_path / head
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return model, tokenizer, path


def test_an_outcome_reward_model_scores_question_and_response(tmp_path):
    model, tokenizer, path = tiny_reward_model(tmp_path, "outcome")
    got = rewards.get(f"rm:{path}")(responses())
    for text, score in zip(TEXTS, got):
        ids = tokenizer(f"{QUESTION}\n{text}", return_tensors="pt")["input_ids"]
        with torch.no_grad():
            expected = model(input_ids=ids).logits[0, 0].item()
        assert score == pytest.approx(expected, abs=1e-5)
    assert got[0] != got[1]


def test_a_process_reward_model_takes_its_weakest_step(tmp_path):
    model, tokenizer, path = tiny_reward_model(tmp_path, "process")
    got = rewards.get(f"prm:{path}")(responses())
    step_id = tokenizer.convert_tokens_to_ids("<extra_0>")
    for text, score in zip(TEXTS, got):
        steps = [line for line in text.split("\n")]
        ids = tokenizer(QUESTION + "\n" + "".join(s + "<extra_0>" for s in steps),
                        return_tensors="pt")["input_ids"]
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0].numpy().astype(np.float64)
        at = np.flatnonzero(ids[0].numpy() == step_id)
        assert len(at) == len(steps)
        good = np.exp(logits[at, 1]) / np.exp(logits[at]).sum(-1)
        assert score == pytest.approx(good.min(), abs=1e-5)


def test_naming_a_reward_model_loads_nothing_until_used_and_it_is_reference_free(tmp_path):
    from rl_onoff.search.rewards import uses_reference

    rewards.check_name(f"rm:{tmp_path / 'not-there-yet'}", "03_tree_search.reward")
    assert not uses_reference(f"prm:{tmp_path}", {"step_check": 0.5})
    assert uses_reference(f"prm:{tmp_path}", {"math_verify": 1.0})
