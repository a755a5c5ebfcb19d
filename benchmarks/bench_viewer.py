"""Benchmark the viewer on a large 01 output: first-page time and resident memory.

    python benchmarks/bench_viewer.py [--size-gb 1.0] [--mean-length 700] [--samples 16]
                                      [--top-k 20] [--vocab 151936] [--out DIR]

--out keeps the output (and measures an existing one again without rebuilding it).

1. A real 01 output, small (tiny-arith, 3 arith questions), gives the exact layout
   01 writes; the benchmark then writes a large output in that layout with
   rl_onoff.distributions' own writer and summaries: about `--size-gb` of arrays
   over a Qwen-sized vocabulary (by default ~5.6M tokens in ~7,900 responses of
   ~700 tokens, 16 per question, top-20 per token), synthetic values, real sizes
   (the JSON holds every response's text and ~150k token strings, as 01 would).
2. In a fresh process, Streamlit's AppTest renders the first page (cold: nothing
   cached), then shows up to 20 other prompts; it prints the times and the process's
   peak resident memory.
3. If Chromium and playwright are installed: a real server, headless Chromium, time
   from opening the URL to the coloured tokens on screen (cold, then reloaded), and
   the server's resident memory after 20 token clicks.

Steps 2 and 3 also run on the small output: the same page with almost no data, so
the difference is what the output's size costs (the rest is Streamlit and the
browser, and grows with the machine's load: the load average is printed).

Goals (the issue): first page under 3 s, under ~500 MB resident.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from rl_onoff import io
from rl_onoff.distributions import store, summary

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository's tools/
from tools import browser  # noqa: E402

GOAL_SECONDS, GOAL_MB = 3.0, 500
CHUNK = 1 << 20  # tokens generated at a time


def template(root: Path) -> dict:
    """distributions.json of a real, small 01 run (the layout the large output copies)."""
    import yaml

    from rl_onoff.config import load_config
    from rl_onoff.distributions import run_dist
    from rl_onoff.sample.run import run_sample

    root.mkdir(parents=True)
    config = root / "config.yaml"
    config.write_text(yaml.safe_dump({
        "defaults": {"device": "cpu", "tracking": {"root": str(root / "runs")}},
        "00_sample": {"dataset": {"num_examples": 3}, "num_samples": 2,
                      "sampling": {"max_new_tokens": 24},
                      "output_dir": str(root / "00")},
        "01_dist": {"input": str(root / "00"), "output_dir": str(root / "01")}}))
    run_sample(load_config(config))
    run_dist(load_config(config))
    return io.read_json(root / "01" / store.JSON_NAME)


def lengths_for(num_tokens: int, mean: float, rng) -> np.ndarray:
    """Response lengths (lognormal around `mean`, 8 to 4096) summing to `num_tokens`."""
    sigma = 0.6
    lengths = []
    while sum(lengths) < num_tokens:
        draw = rng.lognormal(np.log(mean) - sigma ** 2 / 2, sigma, 4096)
        lengths += np.clip(draw, 8, 4096).astype(int).tolist()
    lengths = np.array(lengths)
    lengths = lengths[:np.searchsorted(np.cumsum(lengths), num_tokens) + 1]
    lengths[-1] -= lengths.sum() - num_tokens
    return lengths[lengths > 0]


def token_strings(vocab: int, rng) -> dict[int, str]:
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz0123456789"))
    strings = {}
    for i in range(vocab):
        word = "".join(rng.choice(letters, rng.integers(1, 8)))
        strings[i] = ("\n" if i % 97 == 0 else " " if i % 2 else "") + word
    return strings


def fill(arrays: dict, start: int, count: int, vocab: int, top_k: int, rng) -> None:
    """Synthetic but plausible values for tokens start..start+count: mostly confident tokens,
    a minority of uncertain ones, the sampled token in the top-k at its rank."""
    ids = (rng.zipf(1.3, count) - 1) % vocab
    uncertain = rng.random(count) < 0.25
    entropy = np.where(uncertain, rng.exponential(1.2, count), rng.exponential(0.02, count))
    entropy = np.minimum(entropy, np.log(vocab)).astype(np.float32)
    rank = np.where(rng.random(count) < 0.85, 0, rng.geometric(0.4, count)).astype(np.int32)
    logprob = -(entropy * rng.random(count) + rank * rng.exponential(1.0, count))
    probs = np.sort(rng.exponential(1.0, (count, top_k)) ** 3, axis=1)[:, ::-1]
    probs = (probs / probs.sum(axis=1, keepdims=True) * rng.uniform(0.8, 1.0, (count, 1)))
    topk = rng.integers(0, vocab, (count, top_k), dtype=np.int32)
    inside = rank < top_k
    topk[np.flatnonzero(inside), rank[inside]] = ids[inside]
    rows = np.arange(start, start + count)
    arrays.write(rows, {"token_ids": ids.astype(np.int32), "entropy": entropy,
                        "sampled_entropy": entropy, "logprob": logprob.astype(np.float32),
                        "rank": rank, "topk_ids": topk, "topk_probs": probs.astype(np.float32)})


def build(out: Path, layout: dict, size_gb: float, mean_length: float, per_question: int,
          top_k: int, vocab: int, seed: int = 0) -> dict:
    """Write a 01 output of about `size_gb` GB of arrays in `out`; return its key numbers."""
    from tqdm import tqdm

    rng = np.random.default_rng(seed)
    per_token = store.nbytes(store.array_specs(1, top_k, vocab))
    lengths = lengths_for(int(size_gb * 1e9 / per_token), mean_length, rng)
    specs = store.array_specs(int(lengths.sum()), top_k, vocab)
    strings = token_strings(vocab, rng)
    starts = np.cumsum(lengths) - lengths
    with store.FlatArrays(out, specs) as arrays:
        for start in tqdm(range(0, int(lengths.sum()), CHUNK), desc="arrays", unit="chunk"):
            fill(arrays, start, min(CHUNK, int(lengths.sum()) - start), vocab, top_k, rng)
        flat = arrays.arrays
        accuracy = rng.beta(0.7, 0.7, len(lengths) // per_question + 1)
        rewards = (rng.random(len(lengths)) < accuracy[np.arange(len(lengths)) // per_question])
        questions = []
        for i in tqdm(range(len(lengths)), desc="metadata", unit="response"):
            q, rows = i // per_question, slice(starts[i], starts[i] + lengths[i])
            if q == len(questions):
                text = " ".join(strings[int(t)].strip() for t in rng.integers(0, vocab, 60))
                questions.append({"id": f"synthetic-{q:06d}", "question": text, "reference": "42",
                                  "metadata": {"level": int(q % 5) + 1}, "prompt": text,
                                  "maj_answer": "42", "maj_reward": 1.0, "samples": []})
            ids = flat["token_ids"][rows]
            questions[q]["samples"].append({
                "start": int(starts[i]), "length": int(lengths[i]),
                "text": "".join(strings[int(t)] for t in ids),
                "finish_reason": "length" if lengths[i] == 4096 else "eos",
                "extracted": "42" if rewards[i] else "41", "reward": float(rewards[i]),
                "status": "ok",
                **summary.sample_scalars(flat["entropy"][rows], flat["sampled_entropy"][rows],
                                         flat["logprob"][rows], 10)})
        run_summary = summary.summarize(flat["entropy"], flat["sampled_entropy"],
                                        flat["token_ids"], lengths, rewards.astype(float),
                                        strings, 0.8, 30)
        arrays.save(out / store.NPZ_NAME)
    io.write_json(out / store.JSON_NAME, {
        **layout, "num_tokens": int(lengths.sum()), "vocab_size": vocab,
        "settings": {**layout["settings"], "top_k": top_k},
        "arrays": {name: {"dtype": str(dtype), "shape": list(shape)}
                   for name, (dtype, shape) in specs.items()},
        "summary": run_summary, "questions": questions,
        "token_strings": {str(i): s for i, s in strings.items()}})
    return {"tokens": int(lengths.sum()), "responses": len(lengths), "questions": len(questions),
            "npz_gb": (out / store.NPZ_NAME).stat().st_size / 1e9,
            "json_mb": (out / store.JSON_NAME).stat().st_size / 1e6}


def memory_mb(pid: str = "self") -> dict[str, float]:
    """Resident (VmRSS) and peak resident (VmHWM) memory of a process, MB."""
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    fields = dict(line.split(":", 1) for line in status)
    return {key: int(fields[key].split()[0]) / 1024 for key in ("VmRSS", "VmHWM")}


def measure_apptest(script: str, out: str) -> None:
    """(In a fresh process.) The first page over `out`, then up to 20 other prompts."""
    started = time.perf_counter()
    from streamlit.testing.v1 import AppTest
    imported = time.perf_counter() - started
    sys.argv = [script, "--set", f"02_visualize.input={out}"]
    at = AppTest.from_file(script, default_timeout=120)
    started = time.perf_counter()
    at.run()
    first = time.perf_counter() - started
    assert not at.exception and not at.error, (at.exception, at.error)
    times = []
    questions = len(at.sidebar.selectbox(key="prompt").options)
    for q in np.random.default_rng(1).choice(questions, min(20, questions), replace=False):
        started = time.perf_counter()
        at.sidebar.selectbox(key="prompt").set_value(int(q)).run()
        times.append(time.perf_counter() - started)
        assert not at.exception, at.exception
    print(json.dumps({"import_s": imported, "first_page_s": first,
                      "other_prompt_s": times, **memory_mb()}))


def apptest(out: Path) -> dict:
    answer = subprocess.run([sys.executable, __file__, "--measure-apptest", str(browser.SCRIPT),
                             str(out)],
                            capture_output=True, text=True)
    if answer.returncode:
        sys.exit(f"the AppTest measurement failed:\n{answer.stderr}")
    return json.loads(answer.stdout.strip().splitlines()[-1])


def measure_browser(out: Path, clicks: int = 20) -> dict:
    """Time to the first token on screen (cold, then on reload), the server's memory after
    `clicks` token clicks."""
    result = {}
    with browser.serve(["--set", f"02_visualize.input={out}"]) as (url, server), \
            browser.chromium() as chromium:
        result["server_started_mb"] = memory_mb(str(server.pid))["VmRSS"]
        page = chromium.new_page(viewport={"width": 1500, "height": 1200})
        for name in ("cold_s", "reload_s"):
            started = time.perf_counter()
            page.goto(url)
            page.wait_for_selector(browser.TOKENS, timeout=120_000)
            result[name] = time.perf_counter() - started
        spans = page.locator(browser.TOKENS)
        for i in np.linspace(0, spans.count() - 1, clicks).astype(int).tolist():
            started = time.perf_counter()
            spans.nth(i).click()
            page.get_by_text(f"Token {i}:").wait_for(timeout=30_000)
            result.setdefault("click_s", []).append(time.perf_counter() - started)
        result.update({f"server_{k}": v for k, v in memory_mb(str(server.pid)).items()})
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size-gb", type=float, default=1.0)
    p.add_argument("--mean-length", type=float, default=700)
    p.add_argument("--samples", type=int, default=16, help="responses per question")
    p.add_argument("--top-k", type=int, default=20)
    p.add_argument("--vocab", type=int, default=151_936)
    p.add_argument("--out", help="write the large output here and keep it (default: a "
                                 "temporary directory, removed at the end); if it already "
                                 "holds a 01 output, measure that one")
    p.add_argument("--measure-apptest", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.measure_apptest:
        return measure_apptest(*args.measure_apptest)

    work = Path(tempfile.mkdtemp(prefix="bench-viewer-"))
    out = Path(args.out) if args.out else work / "01"
    try:
        layout = template(work / "template")
        small = work / "template" / "01"
        if (out / store.JSON_NAME).is_file():
            print(f"measuring the existing 01 output in {out}")
        else:
            started = time.perf_counter()
            built = build(out, layout, args.size_gb, args.mean_length, args.samples, args.top_k,
                          args.vocab)
            print(f"built {out}: {built['npz_gb']:.2f} GB NPZ + {built['json_mb']:.0f} MB JSON, "
                  f"{built['tokens']:,} tokens, {built['responses']:,} responses, "
                  f"{built['questions']:,} questions ({time.perf_counter() - started:.0f} s)")
        size = lambda d: sum(f.stat().st_size for f in d.iterdir()) / 1e6  # noqa: E731
        print(f"the small output beside it: tiny-arith, 6 responses, {size(small):.2f} MB; "
              f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
        small_app, app = apptest(small), apptest(out)
        print(f"server side (AppTest, fresh process each): first page {app['first_page_s']:.2f} s "
              f"(small output: {small_app['first_page_s']:.2f} s; goal < {GOAL_SECONDS} s); "
              f"another prompt: median {np.median(app['other_prompt_s']):.2f} s, max "
              f"{np.max(app['other_prompt_s']):.2f} s; peak resident {app['VmHWM']:.0f} MB "
              f"({app['VmHWM'] / GOAL_MB:.2f} of {GOAL_MB} MB; small output: "
              f"{small_app['VmHWM']:.0f} MB)")
        if browser.chromium_path() is None or importlib.util.find_spec("playwright") is None:
            print("browser: skipped (needs chromium and `pip install playwright`)")
            return
        small_web, web = measure_browser(small), measure_browser(out)
        print(f"browser (headless Chromium; cold = fresh server): tokens on screen "
              f"{web['cold_s']:.2f} s after opening the URL, {web['reload_s']:.2f} s on reload "
              f"(small output: {small_web['cold_s']:.2f} s / {small_web['reload_s']:.2f} s; goal "
              f"< {GOAL_SECONDS} s); a token click until its details show: median "
              f"{np.median(web['click_s']):.2f} s (small: {np.median(small_web['click_s']):.2f} "
              f"s); server resident {web['server_started_mb']:.0f} MB idle, "
              f"{web['server_VmRSS']:.0f} MB after 20 clicks, peak {web['server_VmHWM']:.0f} MB "
              f"({web['server_VmHWM'] / GOAL_MB:.2f} of {GOAL_MB} MB; small output: "
              f"{small_web['server_VmHWM']:.0f} MB); load average now "
              f"{os.getloadavg()[0]:.1f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
