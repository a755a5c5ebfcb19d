"""The viewer's page: pick a prompt and a response, read it token by token, see the run.

Widgets keep their state in st.session_state under these keys (tests set them):

    run_dir                  01's output directory (sidebar)
    tab                      Response | Prompts | Run (only the open one is drawn)
    outcomes, levels, search, sort, descending     the prompt filters
    prompt                   the question shown (its index in 01's output)
    view                     entropy | sampled entropy | surprisal | rank | sampler gap
    sample-<q>               the response of question q
    token-<q>-<s>            the selected position in that response

The URL's query (?dir=&prompt=&response=&token=, dir relative to the project)
follows them, so a link reopens the same token; it is read when a session starts.
Text from the output files is shown through text.plain (never as Markdown).

Everything read from disk is cached per output directory and the files' size and
mtime (a new 01 run there invalidates it): the JSON once per process, shared by
every browser tab; a response's arrays when first shown.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import streamlit as st

from rl_onoff.cli import parser
from rl_onoff.config import ConfigError, default_config_path, load_config
from rl_onoff.distributions.store import Distributions
from rl_onoff.viewer import charts, data, forks, tokens
from rl_onoff.viewer.component import clickable_tokens
from rl_onoff.viewer.server import exposure
from rl_onoff.viewer.text import fixed, plain

if TYPE_CHECKING:  # the section's class moves with the config layout; the page only reads it
    from rl_onoff.viewer.config import VisualizeConfig

SECTION = "02_visualize"
ICONS = {"correct": "✓", "incorrect": "✗", "truncated": "✂"}  # text: no emoji font needed


# ---------------------------------------------------------------------------
# Cached reads (keyed by directory and stamp)


@st.cache_resource(max_entries=4, show_spinner="Opening 01's output…")
def _run(path: str, stamp: tuple) -> Distributions:
    return data.open_run(path)


@st.cache_resource(max_entries=4)
def _prompts(path: str, stamp: tuple) -> pd.DataFrame:
    return data.prompt_table(_run(path, stamp))


@st.cache_resource(max_entries=4)
def _labels(path: str, stamp: tuple) -> dict[int, str]:
    """What the prompt list says of each question."""
    table = _prompts(path, stamp)
    return {q: (f"#{q} · " + (f"L{level:g} · " if pd.notna(level) else "")
                + f"acc {fixed(accuracy, 2)} · H {fixed(entropy, 3)} · {text[:60]}")
            for q, level, accuracy, entropy, text in zip(
                table["question"], table["level"], table["accuracy"], table["mean_entropy"],
                table["text"])}


@st.cache_resource(max_entries=64)
def _arrays(path: str, stamp: tuple, question: int, sample: int) -> dict:
    return data.sample_arrays(_run(path, stamp), question, sample)


@st.cache_resource(max_entries=4)
def _run_charts(path: str, stamp: tuple) -> tuple:
    """The Run tab's charts: histogram, by position, correct vs incorrect (or None)."""
    summary, both = _run(path, stamp).meta["summary"], not _equal(path, stamp)
    return (charts.histogram_chart(summary, both), charts.position_chart(summary, both),
            charts.correct_chart(summary))


@st.cache_resource(max_entries=4)
def _equal(path: str, stamp: tuple) -> bool:
    return data.entropies_equal(_run(path, stamp))


@st.cache_resource(max_entries=4, show_spinner="Finding where answers fork…")
def _run_forks(path: str, stamp: tuple) -> pd.DataFrame:
    run = _run(path, stamp)
    return forks.fork_table(run, list(range(len(run.questions))))


@st.cache_resource(max_entries=64)
def _prompt_forks(path: str, stamp: tuple, question: int) -> pd.DataFrame:
    return forks.fork_table(_run(path, stamp), [question])


@st.cache_data(max_entries=16, show_spinner=False)
def _scale_top(path: str, stamp: tuple, scale: str, quantile: float) -> float:
    return data.scale_top(_run(path, stamp), scale, quantile)


# ---------------------------------------------------------------------------
# The page


def render(description: str, argv: list[str]) -> None:
    """Draw the page for this script run (Streamlit reruns it on every interaction)."""
    st.set_page_config(page_title="02-visualize · rl_onoff", layout="wide")
    st.html(COMPACT)
    cfg, base = _settings(description, argv)
    _restore_permalink(cfg)
    typed = st.sidebar.text_input(
        "01 output directory", key="run_dir",
        help="01-dist's output_dir (relative paths start at the YAML's folder)")
    try:
        path, stamp = data.locate(typed, base)
        run = _run(path, stamp)
    except data.ViewerError as err:
        st.title("02-visualize")
        st.error(plain(err))
        st.stop()
    table = _prompts(path, stamp)
    picker = st.sidebar.container()  # above the filters, filled once they are read
    shown = _filters(table)
    _about(run)
    if shown.empty:
        st.info("No prompt matches the filters in the sidebar.")
        return
    with picker:
        question = _pick_prompt(shown, _labels(path, stamp))
    # Only the open tab is drawn: a page that sends less shows sooner.
    response, prompts, summary = st.tabs(["Response", "Prompts", "Run"], key="tab",
                                         on_change="rerun")
    if response.open:
        with response:
            _response(run, path, stamp, cfg, question, base)
    if prompts.open:
        with prompts:
            _prompt_list(shown)
    if summary.open:
        with summary:
            _run_views(run, path, stamp)


# Less empty space above the page, so that a response's tokens show on a 1280x800 window.
COMPACT = "<style>.stMainBlockContainer { padding-top: 3.75rem; }</style>"


def _restore_permalink(cfg: VisualizeConfig) -> None:
    """At a session's start: the directory, prompt, response and token of the URL's query
    (whatever is missing or not a number keeps its default)."""
    if "run_dir" in st.session_state:
        return
    query = st.query_params
    st.session_state["run_dir"] = query.get("dir") or cfg.input
    numbers = {key: int(query[key]) for key in ("prompt", "response", "token")
               if query.get(key, "").isdigit()}
    if "prompt" in numbers:
        st.session_state["prompt"] = q = numbers["prompt"]
        if "response" in numbers:
            st.session_state[f"sample-{q}"] = s = numbers["response"]
            if "token" in numbers:
                st.session_state[f"token-{q}-{s}"] = numbers["token"]


def _permalink(path: str, base: Path, question: int, sample: int, position: int) -> None:
    """The URL's query for what is shown (the directory relative to the YAML's folder if
    inside)."""
    directory = Path(path)
    if directory.is_relative_to(base):
        directory = Path(os.path.relpath(directory, base))
    st.query_params.from_dict({"dir": directory.as_posix(), "prompt": question,
                               "response": sample, "token": position})


def _settings(description: str, argv: list[str]) -> tuple[VisualizeConfig, Path]:
    """02_visualize from the YAML named after `--` (streamlit run ... -- --config X --set K=V)."""
    try:
        args = parser(description).parse_args(argv)
    except SystemExit:
        st.error("usage: streamlit run exp/02-visualize.py -- [--config FILE] "
                 "[--set 02_visualize.KEY=VALUE ...]; got arguments " + " ".join(argv))
        st.stop()
    configs = tuple(str(p) for p in args.configs or [default_config_path()])
    try:
        mtimes = tuple(Path(p).stat().st_mtime_ns if Path(p).is_file() else None for p in configs)
        return _section(configs, tuple(args.overrides), mtimes)
    except ConfigError as err:
        st.error(f"Configuration error: {plain(err)}")
        st.stop()


@st.cache_data(show_spinner=False)
def _section(configs: tuple, overrides: tuple, mtimes: tuple) -> tuple[VisualizeConfig, Path]:
    """The validated section and the folder its paths start at, read again only when a file
    changes (`mtimes`)."""
    config = load_config(list(configs), overrides, section=SECTION)
    return config[SECTION], config.base_dir


def _filters(table: pd.DataFrame) -> pd.DataFrame:
    side = st.sidebar.expander("filter and sort the prompts", expanded=True)
    outcomes = side.multiselect("responses", data.OUTCOMES, default=list(data.OUTCOMES),
                                key="outcomes",
                                help="list prompts with at least one response of these kinds; "
                                     "truncated: stopped by max_new_tokens")
    levels = None
    present = sorted(table["level"].dropna().unique().tolist())
    if present:
        levels = side.multiselect("levels", present, default=present, key="levels")
    search = side.text_input("search question text", key="search")
    sort = side.selectbox("sort by", list(data.SORT_KEYS), key="sort")
    descending = side.toggle("descending", key="descending")
    return data.filter_prompts(table, outcomes, levels, search, sort, descending)


def _pick_prompt(shown: pd.DataFrame, labels: dict[int, str]) -> int:
    options = shown["question"].tolist()
    if st.session_state.get("prompt") not in options:
        st.session_state["prompt"] = options[0]
    question = st.selectbox("prompt", options, format_func=labels.__getitem__, key="prompt")
    st.caption(f"{len(options)} of {len(labels)} prompts match the filters below")
    return question


def _about(run: Distributions) -> None:
    meta = run.meta
    dataset, g = meta["dataset"], meta["generation"]
    st.sidebar.divider()
    st.sidebar.caption(plain(
        f"{meta['model']['name']} on {dataset['name']}/{dataset['split']}: "
        f"{len(run.questions)} questions, {meta['num_tokens']:,} response tokens; sampled at "
        f"T={g['temperature']}, top_p={g['top_p']}, top_k={g['top_k']}, min_p={g['min_p']}; "
        f"01 kept the top {meta['settings']['top_k'] or 'all'} tokens per position."))
    warning = exposure(st.get_option("server.address"), st.get_option("server.port"))
    if warning:
        st.sidebar.warning(warning)


# ---------------------------------------------------------------------------
# Response tab


@st.fragment  # choosing a response, a view or a token reruns this part of the page only
def _response(run: Distributions, path: str, stamp: tuple, cfg: VisualizeConfig,
              question: int, base: Path) -> None:
    record = run.questions[question]
    options = _sample_options(record["samples"])
    top_left, top_right = st.columns([3, 2], gap="large")
    with top_left:
        _question_header(question, record)
    with top_right:
        _sample_list(run, question, options)
    left, right = st.columns([3, 2], gap="large")
    equal = _equal(path, stamp)
    with left:
        pick, colour = st.columns([1, 1])
        with pick:
            sample = _pick_sample(question, record["samples"], options)
        views = data.views(run, equal)
        if st.session_state.get("view") not in views:
            st.session_state["view"] = views[0]
        with colour:
            view = st.selectbox("colour tokens by", views, key="view", help=VIEW_HELP)
    arrays = _arrays(path, stamp, question, sample)
    token_key = f"token-{question}-{sample}"
    last = len(arrays["token_ids"]) - 1
    if token_key not in st.session_state:  # start at the response's most uncertain token
        st.session_state[token_key] = int(record["samples"][sample]["high_entropy_positions"][0])
    st.session_state[token_key] = min(max(int(st.session_state[token_key]), 0), last)

    def select(position: int) -> None:
        st.session_state[token_key] = position

    values = data.view_values(arrays, view)
    scale = _scale(path, stamp, view, cfg)
    strings = [run.token_string(i) for i in arrays["token_ids"]]
    fork = _fork_of(_prompt_forks(path, stamp, question), sample)
    with left:
        html = tokens.response_html(strings, values, scale, st.session_state[token_key],
                                    [data.tooltip(i, arrays, equal) for i in range(len(strings))],
                                    data.VIEWS[view].label,
                                    None if fork is None else int(fork["fork at"]))
        clickable_tokens(html, key=f"tokens-{question}-{sample}", on_click=select)
        st.caption(plain(_scale_caption(view, scale, cfg)))
        if fork is not None:
            _fork_line(fork, lambda: select(int(fork["fork at"])))
    with right:
        position = st.number_input("token position", 0, last, step=1, key=token_key,
                                   help="or click a token in the response")
        _token_details(run, question, sample, arrays, strings, int(position), cfg, equal)
    trace_key = f"trace-{question}-{sample}"

    def picked() -> None:
        points = st.session_state[trace_key]["selection"].get(charts.PICK) or []
        if points:
            select(int(points[0]["position"]))

    st.vega_lite_chart(*charts.trace_chart(values, int(position),
                                           f"{view} ({data.VIEWS[view].unit})"),
                       on_select=picked, selection_mode=charts.PICK, key=trace_key)
    _prompt_fork_table(_prompt_forks(path, stamp, question), question)
    _permalink(path, base, question, sample, int(position))


VIEW_HELP = ("entropy: of the model's full next-token distribution at T=1; sampled entropy: "
             "of the (temperature, top-p/k) distribution 00 drew from (shown when it differs); "
             "surprisal: −log p of the token drawn, at T=1; rank: of the token drawn among the "
             "model's (GLTR's bins); sampler gap: |log π_sampler − log π_trainer| of the token "
             "drawn, where 00 stored its sampler's log-probs")


def _scale(path: str, stamp: tuple, view: str, cfg: VisualizeConfig) -> tokens.Scale:
    if data.VIEWS[view].scale is None:
        return tokens.Scale.bins(data.RANK_EDGES, data.VIEWS[view].unit)
    top = _scale_top(path, stamp, data.VIEWS[view].scale, cfg.scale_quantile)
    return tokens.Scale.linear(top, cfg.shades, data.VIEWS[view].unit)


def _scale_caption(view: str, scale: tokens.Scale, cfg: VisualizeConfig) -> str:
    if data.VIEWS[view].scale is None:
        return ("Click a token to see its alternatives. Colours: the rank of the token drawn "
                "(0: the model's most likely, unhighlighted), in GLTR's bins.")
    return (f"Click a token to see its alternatives. Darkest: at or above "
            f"{fixed(scale.top, 2)} {scale.unit}, the run's {cfg.scale_quantile:.0%} quantile; "
            f"unhighlighted: below {fixed(scale.edges[1], 2)}.")


def _fork_of(table: pd.DataFrame, sample: int):
    rows = table[table["response"] == sample]
    return None if rows.empty else rows.iloc[0]


def _fork_line(fork, go) -> None:
    text, button = st.columns([3, 1], vertical_alignment="center")
    text.caption(plain(
        f"Outcome fork (green underline): at token {fork['fork at']} this {fork['outcome']} "
        f"response drew {charts.token_label(fork['token'])} where #{fork['parts from']} "
        f"drew {charts.token_label(fork['its token'])}; entropy there "
        f"{fixed(fork['entropy there'], 3)} nats."))
    button.button("go to the fork", on_click=go, key="go-fork")


def _question_header(question: int, record: dict) -> None:
    level = (record.get("metadata") or {}).get("level")
    st.markdown(f"#### Question {question}" + (f" · level {level}" if level is not None else "")
                + plain(f" · {record.get('id')}"))
    st.markdown(plain(record["question"]))
    answers = f"Reference answer: {plain(record.get('reference'))}"
    if record.get("maj_answer") is not None:
        answers += (f" · majority answer: {plain(record['maj_answer'])} "
                    f"{ICONS['correct' if (record.get('maj_reward') or 0) > 0 else 'incorrect']}")
    st.markdown(answers)


def _sample_options(samples: list[dict]) -> list[int]:
    """The responses listed: those of the outcomes the sidebar filters on (all if none)."""
    outcomes = st.session_state.get("outcomes") or data.OUTCOMES
    return [s for s, rec in enumerate(samples) if data.outcome(rec) in outcomes] \
        or list(range(len(samples)))


def _sample_list(run: Distributions, question: int, options: list[int]) -> None:
    """The prompt's responses at a glance; a click on a row opens that response."""
    key = f"samples-{question}"

    def pick() -> None:
        rows = st.session_state[key]["selection"]["rows"]
        if rows:
            st.session_state[f"sample-{question}"] = options[rows[0]]

    samples = data.sample_table(run, question).iloc[options]
    samples["outcome"] = [f"{ICONS[o]} {o}" for o in samples["outcome"]]
    st.dataframe(samples, hide_index=True, height=min(38 + 35 * len(samples), 220),
                 on_select=pick, selection_mode="single-row", key=key,
                 column_config={"mean entropy": st.column_config.NumberColumn(format="%.3f"),
                                "max entropy": st.column_config.NumberColumn(format="%.3f"),
                                "log p (sum)": st.column_config.NumberColumn(format="%.2f")})


def _pick_sample(question: int, samples: list[dict], options: list[int]) -> int:
    key = f"sample-{question}"
    if st.session_state.get(key) not in options:
        st.session_state[key] = options[0]

    def label(s: int) -> str:
        rec = samples[s]
        return (f"#{s} {ICONS[data.outcome(rec)]} answer {rec.get('extracted')!r} · "
                f"{rec['length']} tokens · mean H {fixed(rec['mean_entropy'], 3)}")

    return st.selectbox("response", options, format_func=label, key=key)


def _token_details(run: Distributions, question: int, sample: int, arrays: dict,
                   strings: list[str], position: int, cfg: VisualizeConfig,
                   equal: bool) -> None:
    st.markdown(f"Token {position}: {_code(charts.token_label(strings[position]))} "
                f"(id {int(arrays['token_ids'][position])})")
    first, second = st.columns(2)
    if equal:  # 00 sampled from the full distribution: one entropy
        first.metric("entropy (T=1, = sampled)", fixed(arrays["entropy"][position], 4))
    else:
        first.metric("entropy (T=1)", fixed(arrays["entropy"][position], 4))
        second.metric("sampled entropy", fixed(arrays["sampled_entropy"][position], 4))
    first, second = st.columns(2)
    first.metric("log p (T=1)", fixed(arrays["logprob"][position], 4))
    second.metric("rank (0: most likely)", int(arrays["rank"][position]))
    if "sampler_delta" in arrays:
        first.metric("log π_sampler − log π_trainer", fixed(arrays["sampler_delta"][position], 4))
    alternatives = data.top_alternatives(run, question, sample, arrays, position, cfg.top_k_shown)
    st.vega_lite_chart(*charts.top_k_chart(alternatives))


def _prompt_fork_table(table: pd.DataFrame, question: int) -> None:
    """This prompt's outcome forks; a row opens that response at its fork."""
    st.markdown("**Where this prompt's answers fork**: each correct or incorrect response, the "
                "token where it parts from the closest response of the other outcome")
    if table.empty:
        st.caption("No fork: this prompt's finished responses are all correct or all incorrect.")
        return
    _fork_rows(table, f"forks-{question}", FORK_HEIGHT)


FORK_HEIGHT = 250


def _fork_rows(table: pd.DataFrame, key: str, height: int) -> None:
    """A table of forks whose selected row opens its response at the fork token."""
    def pick() -> None:
        rows = st.session_state[key]["selection"]["rows"]
        if rows:
            row = table.iloc[rows[0]]
            q, s = int(row["question"]), int(row["response"])
            st.session_state["prompt"] = q
            st.session_state[f"sample-{q}"] = s
            st.session_state[f"token-{q}-{s}"] = int(row["fork at"])
            st.session_state["tab"] = "Response"

    shown = table.assign(token=table["token"].map(charts.token_label),
                         **{"its token": table["its token"].map(charts.token_label)})
    st.dataframe(shown, hide_index=True, on_select=pick, selection_mode="single-row", key=key,
                 height=min(38 + 35 * len(table), height),
                 column_config={"entropy there": st.column_config.NumberColumn(
                     format="%.3f", help="entropy (nats) at the fork, the same for both "
                                         "responses: they read the same tokens up to it")})


def _code(text) -> str:
    """`text` as an inline code span, whatever backticks it holds."""
    text = str(text)
    fence = "`" * (max((len(run) for run in re.findall("`+", text)), default=0) + 1)
    return f"{fence} {text} {fence}"


# ---------------------------------------------------------------------------
# Prompts and Run tabs


def _prompt_list(shown: pd.DataFrame) -> None:
    order = shown["question"].tolist()

    def pick() -> None:
        rows = st.session_state["prompt_table"]["selection"]["rows"]
        if rows:
            st.session_state["prompt"] = order[rows[0]]
            st.session_state["tab"] = "Response"

    st.caption("Select a row to read that prompt's responses.")
    st.dataframe(shown.drop(columns=["id"]), hide_index=True, on_select=pick, height=640,
                 selection_mode="single-row", key="prompt_table",
                 column_config={"accuracy": st.column_config.NumberColumn(format="%.2f"),
                                "mean_entropy": st.column_config.NumberColumn(
                                    "mean entropy", format="%.3f"),
                                "mean_length": st.column_config.NumberColumn(
                                    "mean length", format="%.1f"),
                                "text": st.column_config.TextColumn("question", width="large")})


def _run_views(run: Distributions, path: str, stamp: tuple) -> None:
    summary, equal = run.meta["summary"], _equal(path, stamp)
    groups = summary["correct_vs_incorrect"]  # correct: reward > 0
    right_answers = groups["correct"]["num_samples"]
    responses = right_answers + groups["incorrect"]["num_samples"]
    cols = st.columns(4 if equal else 5)
    cols[0].metric("responses", f"{responses:,}")
    cols[1].metric("tokens", f"{summary['num_tokens']:,}")
    cols[2].metric("accuracy", fixed(right_answers / responses, 3))
    cols[3].metric("mean entropy" + (" (= sampled)" if equal else ""),
                   fixed(summary["mean_entropy"], 4))
    if not equal:
        cols[4].metric("mean sampled entropy", fixed(summary["mean_sampled_entropy"], 4))
    st.markdown("**Where answers fork**: every response whose prompt has both correct and "
                "incorrect ones, at the token where it parts from the closest response of the "
                "other outcome (the entropy there: did the model hesitate where the answer was "
                "decided?). Select a row to open that response at that token.")
    table = _run_forks(path, stamp)
    if table.empty:
        st.caption("No prompt has both correct and incorrect responses.")
    else:
        _fork_rows(table, "run_forks", 400)
    histogram, by_position, correct_vs_incorrect = _run_charts(path, stamp)
    left, right = st.columns(2)
    left.vega_lite_chart(*histogram)
    right.vega_lite_chart(*by_position)
    if correct_vs_incorrect is not None:
        left.vega_lite_chart(*correct_vs_incorrect)
    fork = summary["forking_tokens"]
    right.markdown(f"**Forking tokens**: most often at entropy ≥ {fixed(fork['threshold'], 3)} "
                   f"nats (the {fork['quantile']:.0%} quantile of all tokens)")
    right.dataframe(pd.DataFrame([{
        "token": charts.token_label(t["text"]), "at high entropy": t["high_count"],
        "in all": t["count"], "share": t["high_share"], "mean entropy there":
        t["mean_high_entropy"]} for t in fork["tokens"]]), hide_index=True, column_config={
            "at high entropy": st.column_config.NumberColumn(help="times the token was at "
                                                             "high entropy"),
            "in all": st.column_config.NumberColumn(help="times the token occurs"),
            "share": st.column_config.NumberColumn(format="%.2f", help="at high entropy / in all"),
            "mean entropy there": st.column_config.NumberColumn(format="%.3f")})
