"""recipes/*.yaml extend the default YAML and validate (they are not run: real models)."""

from __future__ import annotations

import pytest
import yaml

from rl_onoff.config import REPO_ROOT, load_config
from rl_onoff.data.benchmarks import BENCHMARKS

RECIPES = sorted((REPO_ROOT / "recipes").glob("*.yaml"))
DEFAULT = REPO_ROOT / "experiment_config.yaml"
# What each recipe is for, as the issue asks: model, dataset, and what else sets it apart.
EXPECTED = {
    "qwen2.5-math-1.5b-math500-vllm.yaml": ("Qwen/Qwen2.5-Math-1.5B-Instruct", "math500",
                                            {"backend": "vllm"}),
    "qwen3-8b-aime2025-nothink.yaml": ("Qwen/Qwen3-8B", "aime2025", {"enable_thinking": False}),
    "llama-3.1-8b-gsm8k.yaml": ("meta-llama/Llama-3.1-8B-Instruct", "gsm8k", {}),
}


def test_the_three_recipes_are_there():
    assert sorted(p.name for p in RECIPES) == sorted(EXPECTED)


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_a_recipe_validates_over_the_default_yaml(path):
    text = path.read_text()
    assert text.startswith("# ") and len(text.splitlines()) <= 15   # says what it is for; short
    raw = yaml.safe_load(text)
    assert raw.pop("extends") == "../experiment_config.yaml"      # one --config flag suffices
    for section in raw:
        if section != "defaults":
            load_config(path, section=section)                 # raises on a bad key or value
            assert load_config(path, section=section)[section] == \
                load_config([DEFAULT, path], section=section)[section]
    model, dataset, extra = EXPECTED[path.name]
    config = load_config(path, section="00_sample")
    sample = config["00_sample"]
    assert sample.model == model and sample.dataset.name == dataset
    assert sample.dataset.split in BENCHMARKS[dataset].splits
    assert sample.dataset.num_examples is None                  # the whole benchmark
    assert sample.backend == extra.get("backend", "hf")
    assert sample.task.enable_thinking == extra.get("enable_thinking")
    # relative paths still resolve against the default YAML's folder, and 01/02 read what
    # 00 and 01 of the same recipe write
    assert config.base_dir == REPO_ROOT
    if "01_dist" in raw:
        assert load_config(path, section="01_dist")["01_dist"].input == sample.output_dir
        assert sample.output_dir != "exp/00-sample/output"
    if "02_visualize" in raw:
        both = load_config(path, section="02_visualize")
        assert both["02_visualize"].input == load_config(
            path, section="01_dist")["01_dist"].output_dir
