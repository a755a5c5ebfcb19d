"""04-proto: saved vectors checked by an independent forward pass, exact reconstruction of a
short text, early stopping (exact, plateau) and the NaN stop, fp32 updates under a bf16
model, the no-memory baseline and [mem]'s greedy generation against plain Hugging Face
calls, target selection and random controls, the capacity search (grid, bisection,
independent restarts), analyses, several models, config errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from rl_onoff.config import ConfigError, load_config
from rl_onoff.proto.optimize import Settings, initial_vectors, optimise
from rl_onoff.proto.pipeline import folder_name, run_proto
from rl_onoff.proto.sweep import Search, sqrt2_grid
from rl_onoff.proto.targets import Target, build_targets, random_controls
from rl_onoff.stage import StageError

SHORT = " 3 + 4 = 7"
TEXTS = [SHORT, " 19 + 6 = 25\nThe answer is \\boxed{25}."]


@pytest.fixture(scope="module")
def tiny():
    from rl_onoff.models import load_model

    model, tokenizer = load_model("tiny-arith", "cpu")
    return model.requires_grad_(False), tokenizer


def proto_config(write_config, tmp_path: Path, **section) -> Path:
    base = {"model": "tiny-arith", "texts": TEXTS, "steps": 20, "log_every": 5,
            "control": False, "output_dir": str(tmp_path / "out")}
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
        if method == "mem":   # tiny-arith's tokenizer has no BOS: [mem, t_1..t_{N-1}]
            assert int(saved["bos"]) == -1
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
    {"restarts": 2, "control": True},
    {"arrangement": "e_m_alternate", "share_m": True, "restarts": 2,
     "transfer_texts": [" 5 + 2 = 7"]},
    {"method": "mem"},
], ids=["e_m_controls", "alternate_shared_m", "mem"])
def test_saved_vectors_reproduce_the_reported_accuracy(write_config, tmp_path, section):
    out = tmp_path / "out"
    summary = run_proto(load_config(proto_config(write_config, tmp_path, **section)))
    records = json.loads((out / "texts.json").read_text())
    accuracies, probabilities = independent_accuracy(out)
    saved = np.load(out / "proto.npz", allow_pickle=False)
    d = saved["e"].shape[1]
    texts = 4 if section.get("control") else 2
    expected_m = {"mem": (0, d)}.get(section.get("method"),
                                     (1 if section.get("share_m") else texts, d))
    assert saved["m"].shape == expected_m and saved["e"].shape == (texts, d)
    assert saved["kind"].tolist() == ["target"] * 2 + ["random"] * (texts - 2)
    for record, accuracy, probs in zip(records, accuracies, probabilities):
        assert record["accuracy"] == pytest.approx(accuracy, abs=1e-9)
        assert record["target_prob"] == pytest.approx(probs, abs=1e-5)
        assert record["status"] == ("success" if accuracy >= 0.99 else
                                    "partial" if accuracy >= 0.5 else "failed")
    assert summary["mean_accuracy"] == pytest.approx(np.mean(accuracies[:2]))
    if section.get("control"):
        assert summary["random_control"]["mean_accuracy"] == pytest.approx(np.mean(accuracies[2:]))
    for record, probs in zip(records, probabilities):   # bits from the independent pass
        assert record["cross_entropy_bits"] == pytest.approx(-np.log2(probs).sum(), rel=1e-4)
        assert record["information_gain_bits"] == pytest.approx(
            record["baseline_cross_entropy_bits"] - record["cross_entropy_bits"])
    if section.get("transfer_texts"):
        transfer = summary["analyses"]["shared_m_transfer"]
        assert transfer["texts"] == section["transfer_texts"]
        assert len(transfer["accuracy_shared_m"]) == len(transfer["accuracy_own_m"]) == 1
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
    assert result.stopped == ["exact"] and result.best_step[0] == result.steps_run[0] - 1
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
    encode = lambda t: tokenizer(t, add_special_tokens=False)["input_ids"]
    eos = tokenizer.eos_token_id
    sample = lambda text, reward, ids=None: {
        "text": text, "reward": reward, "token_ids": (ids or encode(text)) + [eos]}
    odd_split = [tokenizer.convert_tokens_to_ids("Ġ"), *encode("is")]   # " is" as two tokens
    results = {"model": {"name": "tiny-arith"}, "questions": [
        {"id": "q0", "samples": [sample(" 1", 0.0), sample(" 2", 1.0), sample(" 3", 1.0)]},
        {"id": "q1", "samples": [sample(" is", 1.0, odd_split)]},
        {"id": "q2", "samples": [sample(" 9", 1.0)]}]}
    section = lambda **kw: load_config(write_config({"04_proto": kw}))["04_proto"]
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


def test_capacity_search_walks_the_grid_then_bisects():
    """Against an oracle (solvable iff length <= limit), the search ends on the limit with
    the shortest failure one above, whatever the limit."""
    for limit in (0, 1, 5, 13, 40):
        search = Search(sqrt2_grid(2, 40))
        tried = []
        while (n := search.next_length()) is not None:
            tried.append(n)
            search.record(n, {"accuracy": float(n <= limit)}, {}, {})
        assert search.solved == limit
        assert search.failed == (None if limit == 40 else limit + 1)
        assert len(tried) == len(set(tried))          # no length tried twice
    assert tried == sqrt2_grid(2, 40)                 # limit 40: the grid alone


def test_capacity_search_reports_the_longest_exact_prefix(write_config, tmp_path):
    out = tmp_path / "out"
    summary = run_proto(load_config(proto_config(
        write_config, tmp_path, texts=[SHORT], max_tokens=5, steps=100, lr=0.05, patience=40, sweep=True,
        sweep_start=2, restarts=2)))
    record = json.loads((out / "texts.json").read_text())[0]
    per_restart = []
    for run in record["restarts"]:
        levels = run["levels"]
        grid = [lv["length"] for lv in levels if lv["phase"] == "grid"]
        assert grid == sqrt2_grid(2, record["full_length"])[:len(grid)]
        passed = [lv["length"] for lv in levels if lv["accuracy"] >= 0.99]
        failed = [lv["length"] for lv in levels if lv["accuracy"] < 0.99]
        assert run["capacity"] == max(passed, default=0)
        assert not failed or min(failed) - run["capacity"] == 1   # bisected down to one token
        per_restart.append(run["capacity"])
    assert record["capacity"] == max(per_restart) == summary["capacity"]["max"]
    assert record["capacity_median"] == np.median(per_restart)
    assert record["capacity"] >= 2, "tiny-arith reconstructs at least a 2-token prefix"
    accuracies, _ = independent_accuracy(out)
    assert np.load(out / "proto.npz")["lengths"][0] == record["capacity"]
    assert accuracies[0] == 1.0
    assert (out / "capacity.png").is_file()


def test_a_plateau_stops_a_text_after_patience_steps(tiny):
    """With a learning rate too small to move the loss by min_delta, step 0 is the last real
    improvement and the text leaves after `patience` more steps."""
    model, tokenizer = tiny
    ids = tokenizer(TEXTS[1], add_special_tokens=False)["input_ids"]
    settings = Settings(steps=100, lr=1e-9, patience=5, min_delta=1e-3)
    e0, m0 = initial_vectors(model, settings, [0], 0, 0)
    result = optimise(model, [ids], e0, m0, settings)
    assert result.stopped == ["plateau"] and result.steps_run[0] == 6
    no_patience = optimise(model, [ids], e0, m0, Settings(steps=8, lr=1e-9, patience=None))
    assert no_patience.stopped == ["cap"] and no_patience.steps_run[0] == 8


def test_a_frozen_m_stays_exactly_as_given(tiny):
    model, tokenizer = tiny
    ids = tokenizer(SHORT, add_special_tokens=False)["input_ids"]
    settings = Settings(steps=5)
    e0, m0 = initial_vectors(model, settings, [0], 0, 0)
    result = optimise(model, [ids], e0, m0, settings, train_m=False)
    assert torch.equal(result.m, m0) and not torch.equal(result.e, e0)


def test_a_nan_loss_stops_with_a_message(tiny):
    model, tokenizer = tiny
    ids = tokenizer(SHORT, add_special_tokens=False)["input_ids"]
    settings = Settings(steps=5)
    e0, m0 = initial_vectors(model, settings, [0], 0, 0)
    e0[0, 0] = float("nan")
    with pytest.raises(StageError, match=r"loss became nan at step 0 .*04_proto.lr"):
        optimise(model, [ids], e0, m0, settings)


def test_no_memory_baseline_matches_plain_teacher_forcing(tiny):
    from rl_onoff.proto.baseline import no_memory, start_token

    model, tokenizer = tiny
    targets = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in TEXTS]
    start = start_token(tokenizer, model)
    assert start == tokenizer.eos_token_id     # tiny-arith: no BOS; its config's BOS is EOS
    got = no_memory(model, targets, start)
    for target, row in zip(targets, got):
        ids = torch.tensor([[start] + target])
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0, :-1]
        logp = torch.log_softmax(logits.double(), -1)[torch.arange(len(target)), target]
        assert row["cross_entropy_bits"] == pytest.approx(-logp.sum().item() / math.log(2),
                                                          rel=1e-4)
        right = (logits.argmax(-1) == torch.tensor(target)).sum().item()
        assert row["correct"] == right and row["accuracy"] == pytest.approx(right / len(target))


def test_mem_greedy_generation_feeds_its_own_tokens_back(tiny):
    """Generation from [mem] by a plain loop over growing inputs (no cache), with and
    without a BOS after the vector; the teacher-forced pass with a BOS is checked too."""
    from rl_onoff.proto.evaluate import greedy_from_memory
    from rl_onoff.proto.method import forward

    model, tokenizer = tiny
    embed = model.get_input_embeddings().weight
    e = torch.randn(2, embed.shape[1]) * 2
    for bos in (None, tokenizer.eos_token_id):
        got = greedy_from_memory(model, e, 6, bos)
        for row in range(2):
            inputs = [e[row]] + ([] if bos is None else [embed[bos]])
            emitted = []
            for _ in range(6):
                with torch.no_grad():
                    token = model(inputs_embeds=torch.stack(inputs)[None]).logits[0, -1].argmax()
                emitted.append(int(token))
                inputs.append(embed[token])
            assert got[row].tolist() == emitted
    ids = torch.tensor([tokenizer(SHORT, add_special_tokens=False)["input_ids"]])
    bos = tokenizer.eos_token_id
    with torch.no_grad():
        logits = forward(model, e[:1], None, ids, "mem", "e_m", bos)
        plain = model(inputs_embeds=torch.cat([e[:1, None], embed[None, [bos]],
                                               embed[ids[:, :-1]]], 1)).logits[:, 1:]
    torch.testing.assert_close(logits, plain.float())


def test_random_controls_keep_lengths_and_avoid_special_tokens(tiny):
    _, tokenizer = tiny
    targets = [Target(t, tokenizer(t, add_special_tokens=False)["input_ids"]) for t in TEXTS]
    controls = random_controls(targets, tokenizer, seed=0)
    assert [len(c.token_ids) for c in controls] == [len(t.token_ids) for t in targets]
    assert not set(tokenizer.all_special_ids) & {i for c in controls for i in c.token_ids}
    assert [c.token_ids for c in random_controls(targets, tokenizer, 0)] == \
        [c.token_ids for c in controls] != [c.token_ids for c in random_controls(targets,
                                                                                  tokenizer, 1)]
    assert [c.source["control_for"] for c in controls] == [0, 1]


def test_cosine_summary_against_numpy():
    from rl_onoff.proto.analysis import cosine_summary

    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(4, 8))
    got = cosine_summary([torch.tensor(v) for v in vectors], ["target"] * 3 + ["random"])
    unit = vectors[:3] / np.linalg.norm(vectors[:3], axis=1, keepdims=True)
    sims = [unit[i] @ unit[j] for i in range(3) for j in range(i + 1, 3)]
    assert got["target"]["mean"] == pytest.approx(np.mean(sims), rel=1e-5)
    assert got["target"]["pairs"] == 3 and "random" not in got   # one random vector: no pair


def test_several_models_and_interpolation(write_config, tmp_path, tiny_random_model):
    out = tmp_path / "out"
    summary = run_proto(load_config(proto_config(
        write_config, tmp_path, texts=[SHORT], models=["tiny-arith", tiny_random_model],
        steps=40, lr=0.05, restarts=2, sweep=True, sweep_start=2, interpolation_points=3)))
    assert summary["model_order"] == ["tiny-arith", tiny_random_model]
    assert (out / "capacity_vs_params.png").is_file()
    for name, part in summary["models"].items():
        assert part["model"]["name"] == name
        folder = out / folder_name(name)
        assert json.loads((folder / "summary.json").read_text())["capacity"] == part["capacity"]
        line = part["analyses"].get("interpolation")
        if line and line["texts"]:    # both restarts kept the same length: a=0, 1 are theirs
            runs = json.loads((folder / "texts.json").read_text())[0]["restarts"]
            assert line["ends"][0] == pytest.approx([runs[0]["accuracy"], runs[1]["accuracy"]])


def test_missing_00_output_names_the_key(write_config, tmp_path):
    cfg = load_config(write_config({"04_proto": {"input": str(tmp_path / "nothing")}}))
    with pytest.raises(StageError, match=r"04_proto.input: .*nothing.* not found.*00-sample.py"):
        run_proto(cfg)


@pytest.mark.parametrize("setting, message", [
    ("04_proto.betas=[0.9]", r"04_proto.betas: got \[0.9\]; allowed: two numbers"),
    ("04_proto.arrangement=e_mm", r"04_proto.arrangement: .*did you mean 'e_m'"),
    ("04_proto.steps=0", r"04_proto.steps: got 0; allowed: a positive integer"),
    ("04_proto.patience=0", r"04_proto.patience: got 0; allowed: a positive integer or null"),
    ("04_proto.interpolation_points=1", r"04_proto.interpolation_points: got 1; allowed: 0"),
    ("04_proto.models=['']", r"04_proto.models\[0\]: empty"),
    ("04_proto.transfer_texts=[' 1']", r"04_proto.transfer_texts: .*set share_m: true"),
    ("04_proto.method=mem", None),
])
def test_config_errors_name_the_key(setting, message):
    overrides = [setting] + (["04_proto.share_m=true"] if message is None else [])
    with pytest.raises(ConfigError, match=message or r"04_proto.method: mem .*share_m: false"):
        load_config(overrides=overrides)
