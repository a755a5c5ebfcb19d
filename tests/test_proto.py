"""04-proto: saved vectors checked by an independent forward pass, exact reconstruction of a
short text, fp32 updates under a bf16 model, target selection, sweep grid, config errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from rl_onoff.config import ConfigError, load_config
from rl_onoff.proto.optimize import Settings, initial_vectors, optimise
from rl_onoff.proto.pipeline import run_proto
from rl_onoff.proto.sweep import sqrt2_grid
from rl_onoff.proto.targets import build_targets

SHORT = " 3 + 4 = 7"
TEXTS = [SHORT, " 19 + 6 = 25\nThe answer is \\boxed{25}."]


@pytest.fixture(scope="module")
def tiny():
    from rl_onoff.models import load_model

    model, tokenizer = load_model("tiny-arith", "cpu")
    return model.requires_grad_(False), tokenizer


def proto_config(write_config, tmp_path: Path, **section) -> Path:
    base = {"model": "tiny-arith", "texts": TEXTS, "steps": 20, "log_every": 5,
            "output_dir": str(tmp_path / "out")}
    return write_config({"04_proto": {**base, **section}})


def independent_accuracy(out: Path) -> tuple[list[float], list[list[float]]]:
    """Rebuild the inputs from proto.npz by hand, run a freshly loaded model once, and read
    greedy accuracy and target probabilities: no code of rl_onoff.proto involved."""
    from transformers import AutoModelForCausalLM

    from rl_onoff.models import resolve_source

    model = AutoModelForCausalLM.from_pretrained(resolve_source("tiny-arith")).eval()
    saved = np.load(out / "proto.npz", allow_pickle=False)
    method, arrangement = str(saved["method"]), str(saved["arrangement"])
    accuracies, probabilities = [], []
    for row, n in enumerate(saved["lengths"]):
        ids = torch.tensor(saved["token_ids"][row, :n])
        e = torch.tensor(saved["e"][row])
        if method == "mem":
            inputs = torch.cat([e[None], model.get_input_embeddings().weight[ids[:-1]]])
        else:
            m = torch.tensor(saved["m"][0 if len(saved["m"]) == 1 else row])
            e_at = [i == 0 or (arrangement == "e_m_alternate" and i % 2 == 0) for i in range(n)]
            inputs = torch.stack([e if at else m for at in e_at])
        with torch.no_grad():
            logits = model(inputs_embeds=inputs[None]).logits[0]
        accuracies.append(int((logits.argmax(-1) == ids).sum()) / int(n))
        probabilities.append(logits.softmax(-1)[torch.arange(n), ids].tolist())
    return accuracies, probabilities


@pytest.mark.parametrize("section", [
    {},
    {"arrangement": "e_m_alternate", "share_m": True, "restarts": 2},
    {"method": "mem"},
], ids=["e_m", "alternate_shared_m", "mem"])
def test_saved_vectors_reproduce_the_reported_accuracy(write_config, tmp_path, section):
    out = tmp_path / "out"
    summary = run_proto(load_config(proto_config(write_config, tmp_path, **section)))
    records = json.loads((out / "texts.json").read_text())
    accuracies, probabilities = independent_accuracy(out)
    saved = np.load(out / "proto.npz", allow_pickle=False)
    d = saved["e"].shape[1]
    expected_m = {"mem": (0, d)}.get(section.get("method"), (1 if section.get("share_m") else 2, d))
    assert saved["m"].shape == expected_m and saved["e"].shape == (2, d)
    for record, accuracy, probs in zip(records, accuracies, probabilities):
        assert record["accuracy"] == pytest.approx(accuracy, abs=1e-9)
        assert record["target_prob"] == pytest.approx(probs, abs=1e-5)
        assert record["status"] == ("success" if accuracy >= 0.99 else
                                    "partial" if accuracy >= 0.5 else "failed")
    assert summary["mean_accuracy"] == pytest.approx(np.mean(accuracies))
    history = np.load(out / "history.npz", allow_pickle=False)
    assert history["loss"].shape[:1] == (section.get("restarts", 1),)
    run_dir = next((tmp_path / "runs" / "04-proto").iterdir())
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == sorted({x["step"] for x in lines})  # one clock for all
    assert {"loss", "accuracy", "top5_accuracy", "lr", "e_norm", "embedding_norm"} <= set(lines[0])
    for png in ("training_curves.png", "error_map.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_short_text_is_reconstructed_exactly_and_stops_early(tiny):
    model, tokenizer = tiny
    ids = tokenizer(SHORT, add_special_tokens=False)["input_ids"]
    settings = Settings(steps=300)
    e0, m0 = initial_vectors(model, settings, [0], 0, 0)
    result = optimise(model, [ids], e0, m0, settings)
    assert result.best_accuracy[0] == 1.0
    assert result.steps_run[0] < 300                 # stopped at 100%, not at the budget
    inputs = torch.stack([result.e[0]] + [result.m[0]] * (len(ids) - 1))[None]
    with torch.no_grad():
        emitted = model(inputs_embeds=inputs).logits[0].argmax(-1).tolist()
    assert tokenizer.decode(emitted) == SHORT


def test_a_text_follows_the_same_path_alone_or_in_a_batch(tiny):
    """Summed per-text losses and per-text clipping: batch-mates do not change a trajectory."""
    model, tokenizer = tiny
    ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in TEXTS]
    settings = Settings(steps=8)
    e0, m0 = initial_vectors(model, settings, [0, 1], 0, 0)
    both = optimise(model, ids, e0, m0, settings)
    alone = optimise(model, ids[1:], e0[1:], m0[1:], settings)
    np.testing.assert_allclose(both.curves["loss"][:, 1], alone.curves["loss"][:, 0], rtol=1e-4)
    np.testing.assert_allclose(both.curves["grad_norm"][:, 1], alone.curves["grad_norm"][:, 0],
                               rtol=1e-3)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a GPU"))])
def test_fp32_vectors_take_the_full_step_when_the_model_runs_in_bf16(device):
    """Adam's first step moves each coordinate by lr (times sign(grad)); kept in fp32 that
    0.01 survives exactly, where a bf16 copy would be rounded to its 8-bit mantissa."""
    from rl_onoff.models import load_model

    model, tokenizer = load_model("tiny-arith", device, "bfloat16")
    model.requires_grad_(False)
    ids = tokenizer(SHORT, add_special_tokens=False)["input_ids"]
    settings = Settings(steps=2, lr=0.01, weight_decay=0.0)
    e0, m0 = initial_vectors(model, settings, [0], 0, 0)
    result = optimise(model, [ids], e0, m0, settings)
    assert result.best_step[0] == 1, "one update should lower the loss"
    assert result.e.dtype == torch.float32
    step = (result.e - e0).abs()
    assert step.median().item() == pytest.approx(0.01, rel=1e-3)
    assert (result.e != result.e.bfloat16().float()).float().mean() > 0.9


def test_targets_from_00s_samples(tiny, write_config):
    _, tokenizer = tiny
    encode = lambda t: tokenizer(t, add_special_tokens=False)["input_ids"]  # noqa: E731
    eos = tokenizer.eos_token_id
    sample = lambda text, reward, ids=None: {  # noqa: E731
        "text": text, "reward": reward, "token_ids": (ids or encode(text)) + [eos]}
    odd_split = [tokenizer.convert_tokens_to_ids("Ġ"), *encode("is")]   # " is" as two tokens
    results = {"model": {"name": "tiny-arith"}, "questions": [
        {"id": "q0", "samples": [sample(" 1", 0.0), sample(" 2", 1.0), sample(" 3", 1.0)]},
        {"id": "q1", "samples": [sample(" is", 1.0, odd_split)]},
        {"id": "q2", "samples": [sample(" 9", 1.0)]}]}
    section = lambda **kw: load_config(write_config({"04_proto": kw}))["04_proto"]  # noqa: E731
    cfg = section(num_texts=2)
    targets = build_targets(cfg, tokenizer, results)
    assert [t.text for t in targets] == [" 2", " is"]         # first correct, one per question
    assert targets[1].token_ids == encode(" is") != odd_split
    assert [t.source["matches_sampled"] for t in targets] == [True, False]
    cfg = section(tokens="sampled", per_question=2, select="all", num_texts=9, max_tokens=1)
    targets = build_targets(cfg, tokenizer, results)
    assert [t.text for t in targets] == [" 1", " 2", " is", " 9"]
    assert targets[2].token_ids == odd_split[:1]              # 00's ids, EOS dropped, cut


def test_sqrt2_grid():
    expected = sorted({round(4 * math.sqrt(2) ** k) for k in range(20)
                       if round(4 * math.sqrt(2) ** k) < 40}) + [40]
    assert sqrt2_grid(4, 40) == expected == [4, 6, 8, 11, 16, 23, 32, 40]
    assert sqrt2_grid(4, 4) == [4]


def test_capacity_sweep_reports_the_longest_exact_prefix(write_config, tmp_path):
    out = tmp_path / "out"
    summary = run_proto(load_config(proto_config(
        write_config, tmp_path, texts=[TEXTS[1]], steps=150, sweep=True, sweep_start=2)))
    record = json.loads((out / "texts.json").read_text())[0]
    levels = record["restarts"][0]["levels"]
    assert [lv["length"] for lv in levels] == sqrt2_grid(2, record["full_length"])[:len(levels)]
    passed = [lv["length"] for lv in levels if lv["accuracy"] >= 0.99]
    assert record["capacity"] == summary["capacity"]["max"] == max(passed, default=0)
    assert all(lv["accuracy"] >= 0.99 for lv in levels[:-1])   # it stops at the first failure
    assert record["capacity"] >= 2, "tiny-arith reconstructs at least a 2-token prefix"
    accuracies, _ = independent_accuracy(out)
    assert np.load(out / "proto.npz")["lengths"][0] == record["capacity"]
    assert accuracies[0] == 1.0
    assert (out / "capacity.png").is_file()


def test_missing_00_output_names_both_ways_out(write_config, tmp_path):
    cfg = load_config(write_config({"04_proto": {"input": str(tmp_path / "nothing")}}))
    with pytest.raises(FileNotFoundError, match=r"exp/00-sample.py.*04_proto.texts"):
        run_proto(cfg)


@pytest.mark.parametrize("setting, message", [
    ("04_proto.betas=[0.9]", r"04_proto.betas: got \[0.9\]; allowed: two numbers"),
    ("04_proto.arrangement=e_mm", r"04_proto.arrangement: .*did you mean 'e_m'"),
    ("04_proto.steps=0", r"04_proto.steps: got 0; allowed: a positive integer"),
    ("04_proto.method=mem", None),
])
def test_config_errors_name_the_key(setting, message):
    overrides = [setting] + (["04_proto.share_m=true"] if message is None else [])
    with pytest.raises(ConfigError, match=message or r"04_proto.method: mem .*share_m: false"):
        load_config(overrides=overrides)
