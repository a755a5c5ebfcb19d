"""02-visualize: the viewer's data layer, colours, page (Streamlit AppTest) and a real browser.

One real pipeline run feeds every test: 00-sample with the bundled tiny-arith on
4 arith questions (levels 1 and 5, short max_new_tokens, so that there are
correct, incorrect and truncated responses), then 01-dist with top_k 5. What the
page shows is checked against values computed here from 00's results.json and
01's NPZ read with plain numpy, not through the viewer's loader.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import socket
import subprocess
import sys
import tomllib  # Python 3.11+, as Streamlit itself needs

import numpy as np
import pyarrow as pa
import pytest
import yaml
from streamlit.testing.v1 import AppTest

from rl_onoff.config import ConfigError, REPO_ROOT, load_config
from rl_onoff.viewer import data, forks, server, text, tokens
from tools import browser

SCRIPT = REPO_ROOT / "exp" / "02-visualize.py"
SAMPLE_SPAN = 'class="t s'


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """(config path, 00's results, 01's directory, 01's arrays, per-sample row offsets)."""
    from rl_onoff.distributions import run_dist
    from rl_onoff.sample.run import run_sample

    root = tmp_path_factory.mktemp("viewer")
    config = root / "config.yaml"
    config.write_text(yaml.safe_dump({
        "defaults": {"device": "cpu", "tracking": {"root": str(root / "runs")}},
        "00_sample": {"dataset": {"levels": [1, 5], "num_examples": 4}, "num_samples": 3,
                      "sampling": {"max_new_tokens": 40}, "output_dir": str(root / "00")},
        "01_dist": {"input": str(root / "00"), "output_dir": str(root / "01"), "top_k": 5},
        "02_visualize": {"input": str(root / "01")}}))
    run_sample(load_config(config))
    run_dist(load_config(config))
    results = json.loads((root / "00" / "results.json").read_text())
    with np.load(root / "01" / "distributions.npz", allow_pickle=False) as npz:
        arrays = {name: npz[name] for name in npz.files}
    lengths = [len(s["token_ids"]) for q in results["questions"] for s in q["samples"]]
    starts = iter(np.cumsum([0] + lengths[:-1]).tolist())
    offsets = [[next(starts) for _ in q["samples"]] for q in results["questions"]]
    return config, results, root / "01", arrays, offsets


def rows(pipeline, q: int, s: int) -> slice:
    _, results, _, _, offsets = pipeline
    start = offsets[q][s]
    return slice(start, start + len(results["questions"][q]["samples"][s]["token_ids"]))


def app(monkeypatch, *argv: str) -> AppTest:
    """The page as `streamlit run exp/02-visualize.py -- ARGV` would run it, already run once."""
    monkeypatch.setattr(sys, "argv", [str(SCRIPT), *argv])
    at = AppTest.from_file(str(SCRIPT), default_timeout=60)
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def unescaped(markdown: str) -> str:
    """Markdown written through text.plain, back to the text (undo backslash escapes)."""
    return re.sub(r"\\(.)", r"\1", markdown)


def component_html(at: AppTest) -> str:
    (element,) = at.get("bidi_component")
    return json.loads(element.proto.json)


def span_steps(html: str) -> np.ndarray:
    return np.array([int(part.split('"')[0].split()[0]) for part in html.split(SAMPLE_SPAN)[1:]])


def chart_data(at: AppTest, index: int):
    table = at.get("vega_lite_chart")[index].proto.data.data
    return pa.ipc.open_stream(table).read_all().to_pandas()


# ---------------------------------------------------------------------------
# The data layer


def test_prompt_table_and_filters_match_00s_results(pipeline):
    _, results, out, arrays, _ = pipeline
    table = data.prompt_table(data.open_run(out))
    questions = results["questions"]
    assert table["question"].tolist() == list(range(len(questions)))
    for q, question in enumerate(questions):
        samples = question["samples"]
        row = table.iloc[q]
        assert row["accuracy"] == pytest.approx(np.mean([s["reward"] > 0 for s in samples]))
        assert row["mean_length"] == pytest.approx(np.mean([len(s["token_ids"]) for s in samples]))
        means = [arrays["entropy"][rows(pipeline, q, s)].mean() for s in range(len(samples))]
        assert row["mean_entropy"] == pytest.approx(np.mean(means), rel=1e-6)
        assert row["truncated"] == sum(s["finish_reason"] == "length" for s in samples)
        assert row["correct"] + row["incorrect"] + row["truncated"] == len(samples)
    # the fixture covers every outcome, so each filter below removes something
    assert (table[list(data.OUTCOMES)].sum() > 0).all()
    truncated = {q for q, question in enumerate(questions)
                 if any(s["finish_reason"] == "length" for s in question["samples"])}
    assert set(data.filter_prompts(table, ["truncated"])["question"]) == truncated
    assert data.filter_prompts(table, []).empty
    level_one = {q for q, question in enumerate(questions) if question["metadata"]["level"] == 1}
    assert set(data.filter_prompts(table, levels=[1])["question"]) == level_one
    word = questions[2]["question"].split()[0].upper()
    assert set(data.filter_prompts(table, search=word)["question"]) == \
        {q for q, question in enumerate(questions) if word.lower() in question["question"].lower()}
    by_entropy = data.filter_prompts(table, sort="mean entropy", descending=True)["question"]
    assert by_entropy.tolist() == \
        np.argsort(-table["mean_entropy"].to_numpy(), kind="stable").tolist()


def test_top_alternatives_are_01s_top_k_with_the_sampled_token_marked(pipeline):
    _, _, out, arrays, _ = pipeline
    run = data.open_run(out)
    sample = data.sample_arrays(run, 1, 0)
    span = rows(pipeline, 1, 0)
    for position in range(len(sample["entropy"])):
        table = data.top_alternatives(run, 1, 0, sample, position, 5)
        flat = span.start + position
        assert table["id"].tolist()[:5] == arrays["topk_ids"][flat].tolist()
        assert np.allclose(table["probability"][:5], arrays["topk_probs"][flat])
        assert table["probability"][:5].is_monotonic_decreasing
        sampled = table[table["sampled"]]
        assert sampled["id"].tolist() == [arrays["token_ids"][flat]]
    # a token outside the shown alternatives is added last, with its own probability
    position = int(np.flatnonzero(arrays["rank"][span] >= 1)[0])
    table = data.top_alternatives(run, 1, 0, sample, position, 1)
    assert len(table) == 2 and table["sampled"].tolist() == [False, True]
    assert table["probability"].iloc[1] == pytest.approx(np.exp(arrays["logprob"][span][position]))
    assert table["rank"].iloc[1] == arrays["rank"][span][position]


def test_a_full_distribution_is_read_one_row_at_a_time(pipeline, tmp_path, monkeypatch):
    """01 with top_k null stores (tokens x vocabulary) probabilities; the viewer leaves them
    on disk and ranks the one row a token's chart needs."""
    from rl_onoff.distributions import run_dist

    config = pipeline[0]
    run_dist(load_config(config, [f"01_dist.output_dir={tmp_path / 'full'}", "01_dist.top_k=null"]))
    with np.load(tmp_path / "full" / "distributions.npz", allow_pickle=False) as npz:
        probs = npz["probs"]
    run = data.open_run(tmp_path / "full")
    sample = data.sample_arrays(run, 2, 1)
    assert "probs" not in sample
    position = len(sample["entropy"]) // 2
    table = data.top_alternatives(run, 2, 1, sample, position, 7)
    row = probs[rows(pipeline, 2, 1).start + position]
    assert table["id"].tolist()[:7] == np.argsort(-row, kind="stable")[:7].tolist()
    assert np.allclose(table["probability"][:7], np.sort(row)[::-1][:7])
    # and the page draws it: the first token shown is question 0's first response's
    at = app(monkeypatch, "--config", str(config),
             "--set", f"02_visualize.input={tmp_path / 'full'}")
    assert not at.error
    span = rows(pipeline, 0, 0)
    position = int(np.argmax(pipeline[3]["entropy"][span]))
    bars = chart_data(at, 0)
    assert bars["id"].tolist()[:10] == np.argsort(-probs[span.start + position],
                                                  kind="stable")[:10].tolist()


# ---------------------------------------------------------------------------
# Colours and HTML


def test_colormap_is_matplotlibs_ylorrd():
    colormaps = pytest.importorskip("matplotlib").colormaps
    x = np.linspace(0, 1, 33)
    ours = np.array([[int(c[i:i + 2], 16) for i in (1, 3, 5)] for c in tokens.colormap(x)])
    # matplotlib reads a 256-entry table, so it may differ by a rounding step or two
    assert np.abs(ours - np.array(colormaps["YlOrRd"](x))[:, :3] * 255).max() <= 2.5


def test_scale_steps_and_contrast():
    assert tokens.contrast("#000000", "#ffffff") == pytest.approx(21)
    assert tokens.contrast("#767676", "#ffffff") == pytest.approx(4.54, abs=0.01)  # WCAG's example
    scale = tokens.Scale.linear(top=2.0, shades=8, unit="nats")
    assert np.allclose(scale.edges, np.arange(8) * 2 / 7) and scale.top == 2.0
    values = np.array([0, 0.28, 0.2858, 1.7, 1.99, 2.0, 5.0, -1.0, np.nan])
    expected = np.clip(np.floor(np.nan_to_num(values, nan=9) / 2 * 7), 0, 7)
    assert scale.step(values).tolist() == expected.tolist() == [0, 0, 1, 5, 6, 7, 7, 0, 7]
    # the legend's darkest swatch starts where the caption says the scale tops out
    assert scale.labels[0] == "< 0.29" and scale.labels[-1] == "≥ 2.00"
    assert scale.colours[0] is None  # the lowest step keeps the theme's text and background
    backgrounds = [bg for bg, _ in scale.colours[1:]]
    assert len(set(backgrounds)) == 7
    assert np.all(np.diff([tokens.luminance(bg) for bg in backgrounds]) < 0)  # darker = higher
    for bg, text_colour in scale.colours[1:]:
        assert tokens.contrast(bg, text_colour) >= 4.5  # WCAG AA for body text, in any theme
    ranks = tokens.Scale.bins(data.RANK_EDGES, "rank")
    assert ranks.labels == ("0", "1–9", "10–99", "100–999", "≥ 1000")
    assert ranks.step([0, 1, 9, 10, 99, 100, 999, 1000, 5000]).tolist() == \
        [0, 1, 1, 2, 2, 3, 3, 4, 4]


def test_html_escapes_tokens_and_keeps_whitespace():
    scale = tokens.Scale.linear(top=1.0, shades=4, unit="nats")
    html = tokens.response_html(["a<b", " \n", "  x", "<|endoftext|>"], np.array([0, 0.4, 0.7, 2]),
                                scale, 1, ["t0", 't"1', "t2", "t3"], "entropy", fork=2)
    assert "a&lt;b" in html and "&lt;|endoftext|&gt;" in html and "<|" not in html
    assert ">  x<" in html and "> \n<" in html
    assert span_steps(html).tolist() == [0, 1, 2, 3]
    assert 'class="t s1 nl sel"' in html and html.count(" sel") == 1
    assert 'title="t&quot;1"' in html
    assert 'class="t s2 fork"' in html and html.count(" fork") == 1
    assert html.count('class="sw s') == 4 and "≥ 1.00" in html and "&lt; 0.33" in html


# ---------------------------------------------------------------------------
# The page (AppTest)


def test_page_shows_the_prompt_sample_and_token_selected(pipeline, monkeypatch):
    config, results, _, arrays, _ = pipeline
    at = app(monkeypatch, "--config", str(config))
    assert any(text.plain(results["questions"][0]["question"]) in m.value for m in at.markdown)

    q, s = 1, 2
    at.sidebar.selectbox(key="prompt").set_value(q).run()
    assert any(text.plain(results["questions"][q]["question"]) in m.value for m in at.markdown)
    at.selectbox(key=f"sample-{q}").set_value(s).run()
    span = rows(pipeline, q, s)
    entropy, logprob = arrays["entropy"][span], arrays["logprob"][span]
    # the first token shown is the response's highest-entropy one
    assert at.number_input(key=f"token-{q}-{s}").value == int(np.argmax(entropy))

    position = 3
    at.number_input(key=f"token-{q}-{s}").set_value(position).run()
    metrics = {m.label: m.value for m in at.metric}
    # 00 sampled at T=1 without top-p/k: the two entropies are one, shown once
    assert np.allclose(arrays["entropy"], arrays["sampled_entropy"], atol=1e-6)
    assert metrics["entropy (T=1, = sampled)"] == f"{entropy[position]:.4f}"
    assert "sampled entropy" not in metrics
    assert "sampled entropy" not in at.selectbox(key="view").options
    assert metrics["log p (T=1)"] == f"{logprob[position]:.4f}"
    assert metrics["rank (0: most likely)"] == str(arrays["rank"][span][position])

    html = component_html(at)
    assert html.count(SAMPLE_SPAN) == len(entropy)
    assert f'sel" data-i="{position}"' in html
    top = np.quantile(arrays["entropy"], 0.99)  # the default scale: the run's 99% quantile
    assert np.array_equal(span_steps(html), np.clip(np.floor(entropy / top * 7), 0, 7))

    bars = chart_data(at, 0)  # the top-k chart of the selected token
    assert bars["id"].tolist()[:5] == arrays["topk_ids"][span][position].tolist()
    assert bars.loc[bars["sampled"], "id"].tolist() == [arrays["token_ids"][span][position]]

    at.selectbox(key="view").set_value("surprisal").run()
    html = component_html(at)
    assert "surprisal" in html
    top = np.quantile(-arrays["logprob"].astype(np.float64), 0.99)
    assert np.array_equal(span_steps(html), np.clip(np.floor(-logprob / top * 7), 0, 7))
    at.selectbox(key="view").set_value("rank").run()
    gltr = np.digitize(arrays["rank"][span], [1, 10, 100, 1000])
    assert np.array_equal(span_steps(component_html(at)), gltr)
    # 00 stored its sampler's log-probs: the gap view is there, ~0 for our own sampler
    assert "sampler gap" in at.selectbox(key="view").options
    assert np.abs(arrays["sampler_delta"][span]).max() < 1e-3
    # the URL's query follows the view: directory (relative to the YAML's folder), prompt,
    # response, token
    assert {k: str(v) for k, v in at.query_params.items()} == {
        "dir": str(pipeline[2].relative_to(config.parent)), "prompt": str(q),
        "response": str(s), "token": str(position)}


def test_page_filters_list_the_matching_prompts(pipeline, monkeypatch):
    config, results, _, _, _ = pipeline
    at = app(monkeypatch, "--config", str(config))
    at.sidebar.multiselect(key="outcomes").set_value(["truncated"]).run()
    truncated = [q for q, question in enumerate(results["questions"])
                 if any(s["finish_reason"] == "length" for s in question["samples"])]
    labels = at.sidebar.selectbox(key="prompt").options  # "#<question> · ..."
    assert [int(label.split()[0][1:]) for label in labels] == truncated
    # the response list of a prompt keeps to the chosen outcomes too
    q = truncated[0]
    at.sidebar.selectbox(key="prompt").set_value(q).run()
    shown = at.selectbox(key=f"sample-{q}").options
    samples = results["questions"][q]["samples"]
    assert len(shown) == sum(s["finish_reason"] == "length" for s in samples)
    at.sidebar.multiselect(key="outcomes").set_value(list(data.OUTCOMES)).run()
    at.sidebar.text_input(key="search").set_value("no question says this").run()
    assert any("No prompt matches" in i.value for i in at.info)


@pytest.mark.parametrize("damage, message", [
    ("missing", "does not exist"), ("empty", "holds no distributions.json"),
    ("json", "is not valid JSON"), ("npz", "cannot be read"), ("no_npz", "no distributions.npz"),
    ("version", "format_version")])
def test_page_explains_a_missing_empty_or_corrupt_output(pipeline, tmp_path, monkeypatch,
                                                         damage, message):
    config, _, out, _, _ = pipeline
    target = tmp_path / "01"
    if damage != "missing":
        target.mkdir()
    if damage in ("json", "npz", "no_npz", "version"):
        shutil.copytree(out, target, dirs_exist_ok=True)
    if damage == "json":
        text = (target / "distributions.json").read_text()
        (target / "distributions.json").write_text(text[:len(text) // 2])
    if damage == "npz":
        raw = (target / "distributions.npz").read_bytes()
        (target / "distributions.npz").write_bytes(raw[:len(raw) // 2])
    if damage == "no_npz":
        (target / "distributions.npz").unlink()
    if damage == "version":
        meta = json.loads((target / "distributions.json").read_text())
        (target / "distributions.json").write_text(json.dumps({**meta, "format_version": 99}))
    at = app(monkeypatch, "--config", str(config), "--set", f"02_visualize.input={target}")
    assert len(at.error) == 1 and message in unescaped(at.error[0].value)
    assert "exp/01-dist.py" in unescaped(at.error[0].value) or damage == "version"


def test_page_reports_configuration_errors(monkeypatch, pipeline):
    config = pipeline[0]
    at = app(monkeypatch, "--config", str(config), "--set", "02_visualize.port=0")
    assert "02_visualize.port: got 0; allowed: 1 to 65535" in unescaped(at.error[0].value)
    at = app(monkeypatch, "--config", str(config), "--set", "02_visualize.shade=4")
    assert "did you mean 'shades'" in unescaped(at.error[0].value)
    at = app(monkeypatch, "--no-such-flag")
    assert "usage: streamlit run exp/02-visualize.py --" in unescaped(at.error[0].value)


def test_run_tab_summarises_the_run(pipeline, monkeypatch):
    config, results, _, arrays, _ = pipeline
    at = app(monkeypatch, "--config", str(config))
    assert not at.get("vega_lite_chart")[2:]  # only the open tab (Response) is drawn
    at.session_state["tab"] = "Run"
    at.run()
    assert not at.exception
    metrics = {m.label: m.value for m in at.metric}
    rewards = [s["reward"] for q in results["questions"] for s in q["samples"]]
    assert metrics["responses"] == f"{len(rewards):,}"
    assert metrics["tokens"] == f"{len(arrays['entropy']):,}"
    assert metrics["accuracy"] == f"{np.mean(np.array(rewards) > 0):.3f}"
    assert metrics["mean entropy (= sampled)"] == f"{arrays['entropy'].mean():.4f}"
    assert "mean sampled entropy" not in metrics
    assert len(at.get("vega_lite_chart")) == 3  # histogram, by position, correct vs incorrect


def test_launcher_refuses_a_bad_config_before_starting_a_server():
    answer = subprocess.run([sys.executable, str(SCRIPT), "--set", "02_visualize.port=70000"],
                            capture_output=True, text=True, timeout=120)
    assert answer.returncode == 2
    assert "02_visualize.port: got 70000; allowed: 1 to 65535" in answer.stderr


@pytest.mark.parametrize("key, value, allowed", [
    ("scale_quantile", 0, "0 < scale_quantile <= 1"), ("shades", 1, "2 to 32"),
    ("top_k_shown", 0, "a positive integer"), ("address", "' '", "an interface address")])
def test_config_errors_name_the_key(key, value, allowed):
    with pytest.raises(ConfigError, match=rf"02_visualize\.{key}:.*{allowed}"):
        load_config(None, [f"02_visualize.{key}={value}"])


def test_server_binds_to_localhost_and_warns_otherwise():
    assert server.is_loopback("127.0.0.1") and server.is_loopback("::1")
    assert server.is_loopback("localhost") and server.is_loopback("127.0.0.2")
    for address in ("0.0.0.0", "", None, "10.1.2.3", "myhost.example"):
        assert not server.is_loopback(address)
    assert server.exposure("127.0.0.1", 8501) is None
    assert "0.0.0.0:9000" in server.exposure("0.0.0.0", 9000)
    assert "every interface" in server.exposure(None, 8501)
    cfg = load_config(None, ["02_visualize.port=9000"])["02_visualize"]
    command = server.command("x.py", cfg.address, cfg.port, ["--set", "a.b=1"])
    hosts = [command[i + 1] for i, flag in enumerate(command) if flag == "--server.allowedHosts"]
    assert hosts == ["localhost", "127.0.0.1", "::1"]
    assert command[command.index("--client.showErrorDetails") + 1] == "type"
    assert command[command.index("--server.address") + 1] == "127.0.0.1"
    assert command[command.index("--server.port") + 1] == "9000"
    assert command[command.index("--"):] == ["--", "--set", "a.b=1"]
    assert command[command.index("--browser.gatherUsageStats") + 1] == "false"
    project = tomllib.loads((REPO_ROOT / ".streamlit" / "config.toml").read_text())
    assert project["server"]["address"] == "127.0.0.1"
    assert project["server"]["allowedHosts"] == list(server.ALLOWED_HOSTS)
    assert load_config()["02_visualize"].address == "127.0.0.1"


def test_screenshot_tool_passes_everything_after_dashes_to_the_viewer():
    """The documented form: options, then `--` and the viewer's own --config/--set."""
    args, viewer_args = browser.parse_args(
        ["shot.png", "--prompt", "3", "--token", "9", "--", "--set", "02_visualize.input=d"])
    assert (args.out, args.prompt, args.sample, args.token) == ("shot.png", 3, None, 9)
    assert viewer_args == ["--set", "02_visualize.input=d"]
    args, viewer_args = browser.parse_args(["shot.png", "--theme", "dark"])
    assert args.theme == "dark" and viewer_args == []
    with pytest.raises(SystemExit):  # an unknown option of ours is still an error
        browser.parse_args(["shot.png", "--colour", "red"])


def derived(pipeline, dest, repeat: int = 1, extra: dict | None = None, edit=None):
    """A copy of the fixture's 01 output written here with numpy and json: its arrays repeated
    `repeat` times (question 0's first response then spans all of them), `extra` arrays
    added, `edit(meta)` applied to the JSON."""
    _, _, out, arrays, _ = pipeline
    written = {name: np.concatenate([values] * repeat) for name, values in arrays.items()}
    written.update(extra or {})
    dest.mkdir()
    np.savez(dest / "distributions.npz", **written)
    meta = json.loads((out / "distributions.json").read_text())
    meta["arrays"] = {name: {"dtype": str(v.dtype), "shape": list(v.shape)}
                      for name, v in written.items()}
    first = meta["questions"][0]["samples"][0]
    first.update(length=len(written["entropy"]) if repeat > 1 else first["length"])
    first["high_entropy_positions"] = np.argsort(
        -written["entropy"][:first["length"]], kind="stable")[:10].tolist()
    if edit:
        edit(meta)
    (dest / "distributions.json").write_text(json.dumps(meta))
    return dest


# ---------------------------------------------------------------------------
# Where answers fork, numbers and plain text


def test_outcome_forks_of_hand_made_responses():
    correct = [1, 2, 3, 4, 5, 6]
    near = [1, 2, 3, 4, 5, 9, 9]   # incorrect: parts from `correct` at 5
    far = [1, 2, 7]                # incorrect: parts from `correct` at 2
    cut = [1, 2, 3, 4, 5, 6, 7]    # truncated: no answer, no fork
    got = forks.outcome_forks([np.array(t) for t in (correct, near, far, cut)],
                              ["correct", "incorrect", "incorrect", "truncated"])
    assert got == [forks.Fork(0, 5, 1), forks.Fork(1, 5, 0), forks.Fork(2, 2, 0)]
    # a response that is the start of one of the other outcome never drew differently
    assert forks.outcome_forks([np.array([1, 2]), np.array([1, 2, 3])],
                               ["correct", "incorrect"]) == []
    assert forks.outcome_forks([np.array(correct)] * 2, ["correct"] * 2) == []


def test_fork_table_matches_a_brute_force_alignment_of_00s_tokens(pipeline):
    _, results, out, arrays, offsets = pipeline
    table = forks.fork_table(data.open_run(out), list(range(len(results["questions"]))))
    expected = []
    for q, question in enumerate(results["questions"]):
        samples = question["samples"]
        kinds = ["truncated" if r["finish_reason"] == "length" else
                 "correct" if r["reward"] > 0 else "incorrect" for r in samples]
        for s, (rec, kind) in enumerate(zip(samples, kinds)):
            best = None
            for t, other in enumerate(samples):
                if {kind, kinds[t]} != {"correct", "incorrect"}:
                    continue
                shared = 0
                while (shared < min(len(rec["token_ids"]), len(other["token_ids"]))
                       and rec["token_ids"][shared] == other["token_ids"][shared]):
                    shared += 1
                if best is None or shared > best[0]:
                    best = (shared, t)
            if best and best[0] < min(len(rec["token_ids"]), len(samples[best[1]]["token_ids"])):
                expected.append((q, s, best[0], best[1],
                                 float(arrays["entropy"][offsets[q][s] + best[0]])))
    got = list(zip(table["question"], table["response"], table["fork at"], table["parts from"],
                   table["entropy there"]))
    assert [g[:4] for g in got] == [e[:4] for e in expected]
    assert np.allclose([g[4] for g in got], [e[4] for e in expected])


def test_fixed_rounds_like_the_browser_and_plain_renders_as_typed():
    # JavaScript's toFixed rounds the exact binary value, ties away from zero: 0.625 is exact
    # (a tie, up), 1.005 is stored as 1.00499999999999989... (down), -0.0001 has no sign left
    assert [text.fixed(v, 2) for v in (0.625, 1.005, -0.625, -0.0001, 2.675)] == \
        ["0.63", "1.00", "-0.63", "0.00", "2.67"]
    assert text.fixed(5 / 8, 2) != f"{5 / 8:.2f}"  # Python's own format rounds the tie to even
    from markdown_it import MarkdownIt

    hostile = "Find $x$ if *a* _b_ ![](http://127.0.0.1:9/x.png) <img src=y> :red[z] # 1. `q`\nnext"
    rendered = MarkdownIt("commonmark").render(text.plain(hostile))
    assert "<img" not in rendered and "<em>" not in rendered and "<code>" not in rendered
    assert rendered == "<p>" + hostile.replace("&", "&amp;").replace("<", "&lt;").replace(
        ">", "&gt;").replace('"', "&quot;").replace("\n", "<br />\n") + "</p>\n"


def test_page_shows_file_text_as_typed_and_path_errors_in_one_line(pipeline, tmp_path,
                                                                   monkeypatch):
    config = pipeline[0]
    hostile = "What is *6* _times_ $7$? ![](http://127.0.0.1:9/x.png)"

    def edit(meta):
        meta["questions"][0]["question"] = hostile

    out = derived(pipeline, tmp_path / "01", edit=edit)
    at = app(monkeypatch, "--config", str(config), "--set", f"02_visualize.input={out}")
    assert text.plain(hostile) in [m.value for m in at.markdown]
    for typed, reason in (("x" * 5000, "File name too long"), ("a\x00b", "does not exist")):
        at.sidebar.text_input(key="run_dir").set_value(typed).run()
        assert not at.exception
        (error,) = at.error
        message = unescaped(error.value)
        assert reason in message and "\n" not in message and len(message) < 700


def test_sampler_gap_colours_tokens_by_the_absolute_gap(pipeline, tmp_path, monkeypatch):
    config, _, _, arrays, _ = pipeline
    delta = np.random.default_rng(0).normal(0, 0.3, len(arrays["entropy"])).astype(np.float32)
    out = derived(pipeline, tmp_path / "01", extra={"sampler_delta": delta})
    at = app(monkeypatch, "--config", str(config), "--set", f"02_visualize.input={out}")
    at.selectbox(key="view").set_value("sampler gap").run()
    span = rows(pipeline, 0, 0)
    top = np.quantile(np.abs(delta.astype(np.float64)), 0.99)
    assert np.array_equal(span_steps(component_html(at)),
                          np.clip(np.floor(np.abs(delta[span]) / top * 7), 0, 7))
    position = at.number_input(key="token-0-0").value
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["log π_sampler − log π_trainer"] == f"{delta[span][position]:.4f}"


def test_a_permalink_opens_its_prompt_response_and_token(pipeline, monkeypatch):
    config = pipeline[0]
    monkeypatch.setattr(sys, "argv", [str(SCRIPT), "--config", str(config)])
    at = AppTest.from_file(str(SCRIPT), default_timeout=60)
    at.query_params.update({"dir": str(pipeline[2]), "prompt": "2", "response": "1",
                            "token": "4"})
    at.run()
    assert not at.exception
    assert at.sidebar.selectbox(key="prompt").value == 2
    assert at.selectbox(key="sample-2").value == 1
    assert at.number_input(key="token-2-1").value == 4
    assert 'sel" data-i="4"' in component_html(at)


def websocket_handshake(port: int, host: str) -> int:
    """The HTTP status of a WebSocket handshake on the app's stream, as a page on `host`
    (its Host and Origin) would send it."""
    request = (f"GET /_stcore/stream HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
               "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
               f"Sec-WebSocket-Version: 13\r\nOrigin: http://{host}:{port}\r\n\r\n")
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(request.encode())
        return int(sock.recv(64).split()[1])


def test_a_foreign_host_name_is_refused_and_localhost_served(pipeline):
    """DNS rebinding: a hostile page whose name resolves to 127.0.0.1 reaches the port but
    is refused by name; the names a tunnel uses still connect."""
    with browser.serve(["--config", str(pipeline[0])]) as (url, _):
        port = int(url.rsplit(":", 1)[1])
        assert websocket_handshake(port, "evil.example") == 403
        assert websocket_handshake(port, "localhost") == 101
        assert websocket_handshake(port, "127.0.0.1") == 101


# ---------------------------------------------------------------------------
# A real browser


@pytest.mark.skipif(browser.chromium_path() is None,
                    reason="no chromium on PATH (Debian: apt-get install chromium)")
@pytest.mark.skipif(importlib.util.find_spec("playwright") is None,
                    reason="playwright not installed (pip install playwright)")
def test_browser_shows_coloured_tokens_and_a_click_selects_one(pipeline, tmp_path):
    config, results, _, arrays, _ = pipeline
    with browser.serve(["--config", str(config)]) as (url, _), browser.chromium() as chromium:
        page = chromium.new_page(viewport={"width": 1400, "height": 1100})
        page.goto(url)
        page.wait_for_selector(browser.TOKENS, timeout=60_000)
        assert page.get_by_text(results["questions"][0]["question"]).first.is_visible()
        span = rows(pipeline, 0, 0)
        spans = page.locator(browser.TOKENS)
        assert spans.count() == span.stop - span.start
        # every highlighted token has its step's colours; at least one is highlighted
        scale = tokens.Scale.linear(np.quantile(arrays["entropy"], 0.99), 8, "nats")
        steps = np.clip(np.floor(arrays["entropy"][span] / scale.top * 7), 0, 7).astype(int)
        assert steps.max() > 0
        for i in np.flatnonzero(steps):
            background, text = scale.colours[steps[i]]
            colours = spans.nth(int(i)).evaluate(
                "el => [getComputedStyle(el).backgroundColor, getComputedStyle(el).color]")
            assert colours == [_rgb(background), _rgb(text)]
        # a click selects the token: the position box and the details follow
        target = int(np.argmin(arrays["entropy"][span]))
        spans.nth(target).click()
        page.wait_for_function(
            "t => document.querySelector('input[type=number]')?.value === String(t)",
            arg=target, timeout=30_000)
        page.get_by_text(f"Token {target}:").wait_for(timeout=30_000)
        # a click near the right end of the entropy trace selects a position near the end
        trace = page.locator("[data-testid=stVegaLiteChart]").nth(1)
        trace.scroll_into_view_if_needed()
        box = trace.bounding_box()
        page.mouse.click(box["x"] + 0.97 * box["width"], box["y"] + 0.5 * box["height"])
        last = spans.count() - 1
        page.wait_for_function(
            "last => +document.querySelector('input[type=number]')?.value >= 0.8 * last",
            arg=last, timeout=30_000)
        page.screenshot(path=str(tmp_path / "viewer.png"), full_page=True)
    assert (tmp_path / "viewer.png").stat().st_size > 10_000


def _rgb(colour: str) -> str:
    return "rgb({}, {}, {})".format(*(int(colour[i:i + 2], 16) for i in (1, 3, 5)))


@pytest.mark.skipif(browser.chromium_path() is None,
                    reason="no chromium on PATH (Debian: apt-get install chromium)")
@pytest.mark.skipif(importlib.util.find_spec("playwright") is None,
                    reason="playwright not installed (pip install playwright)")
def test_browser_permalink_scrolls_to_its_token_and_opens_a_fork(pipeline, tmp_path):
    config, results, out, arrays, _ = pipeline
    long = derived(pipeline, tmp_path / "long", repeat=12)  # one response of thousands of tokens
    target = len(arrays["entropy"]) * 12 - 30
    with browser.serve(["--config", str(config)]) as (url, _), browser.chromium() as chromium:
        page = chromium.new_page(viewport={"width": 1280, "height": 800})
        page.goto(f"{url}/?dir={long}&prompt=0&response=0&token={target}")
        page.get_by_text(f"Token {target}:").wait_for(timeout=60_000)
        page.wait_for_timeout(500)
        # the selected token is inside the scrolled box and the box is above the fold
        seen = page.locator(".rlo-tokens").evaluate("""box => {
            const sel = box.querySelector('.sel');
            const b = box.getBoundingClientRect(), s = sel.getBoundingClientRect();
            return [box.scrollTop, s.top >= b.top && s.bottom <= b.bottom, b.top, +sel.dataset.i];
        }""")
        assert seen[0] > 0 and seen[1] and seen[2] < 800 and seen[3] == target
        # a response with an outcome fork: the button selects the fork's token
        table = forks.fork_table(data.open_run(out), list(range(len(results["questions"]))))
        if table.empty:
            pytest.skip("the fixture's run has no prompt with both outcomes")
        row = table.iloc[0]
        q, s = int(row["question"]), int(row["response"])
        page.goto(f"{url}/?dir={out}&prompt={q}&response={s}&token=0")
        page.get_by_text("Token 0:").wait_for(timeout=60_000)
        assert page.locator(".rlo-tokens .fork").get_attribute("data-i") == str(row["fork at"])
        page.get_by_role("button", name="go to the fork").click()
        page.get_by_text(f"Token {row['fork at']}:").wait_for(timeout=30_000)
        page.wait_for_url(re.compile(rf"token={row['fork at']}(&|$)"), timeout=10_000)
