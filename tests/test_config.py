"""The shared YAML: defaults, overrides, and errors that name the key and the fix."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from rl_onoff.config import REPO_ROOT, ConfigError, load_config


def test_repo_yaml_loads_with_every_section():
    cfg = load_config(REPO_ROOT / "experiment_config.yaml")
    assert cfg.sources == [str(REPO_ROOT / "experiment_config.yaml")]
    assert cfg["00_sample"].model == "tiny-arith"
    assert cfg["00_sample"].dataset.name == "arith"


def test_section_inherits_and_overrides_defaults(write_config):
    path = write_config({"defaults": {"seed": 7, "model": "m1"},
                         "00_sample": {"model": "m2", "sampling": {"temperature": 0.5}}})
    cfg = load_config(path)
    assert cfg.defaults.seed == 7 and cfg["00_sample"].seed == 7
    assert cfg.defaults.model == "m1" and cfg["00_sample"].model == "m2"
    assert cfg["00_sample"].sampling.temperature == 0.5


def test_missing_section_gets_defaults(write_config):
    cfg = load_config(write_config({}))
    assert cfg["00_sample"].num_samples == 8
    assert cfg["00_sample"].task.format == "boxed"


def test_overrides_are_typed(write_config):
    cfg = load_config(write_config({}), [
        "00_sample.sampling.temperature=0", '00_sample.sampling.stop=[</answer>, "\\n\\n"]',
        "00_sample.dataset.levels=[4, 5]", "00_sample.dataset.num_examples=null",
        "defaults.trust_remote_code=true", "00_sample.task.enable_thinking=false",
        "00_sample.sampling.min_p=1e-3"])
    s = cfg["00_sample"]
    assert s.sampling.temperature == 0.0 and isinstance(s.sampling.temperature, float)
    assert s.sampling.stop == ["</answer>", "\n\n"]
    assert s.dataset.levels == [4, 5] and s.dataset.num_examples is None
    assert s.trust_remote_code is True and s.task.enable_thinking is False
    assert s.sampling.min_p == 0.001  # YAML 1.1 reads 1e-3 as a string; a float key takes it as a number


def test_resolved_config_round_trips(write_config):
    cfg = load_config(write_config({"00_sample": {"num_samples": 3}}), section="00_sample")
    resolved = cfg.to_dict()
    assert set(resolved) == {"defaults", "00_sample"}  # what this run validated
    assert resolved["00_sample"]["num_samples"] == 3
    assert resolved["00_sample"]["tracking"]["wandb"] is False


@pytest.mark.parametrize("data, overrides, expected", [
    ({"00_sample": {"sampling": {"temprature": 0.5}}}, [],
     ["00_sample.sampling.temprature: unknown key", "did you mean 'temperature'", "allowed keys"]),
    ({"00_sampel": {}}, [], ["00_sampel: unknown section", "did you mean '00_sample'"]),
    ({"00_sample": {"num_samples": "eight"}}, [],
     ["00_sample.num_samples: got 'eight'", "expected integer"]),
    ({"00_sample": {"num_samples": 0}}, [], ["00_sample.num_samples: got 0", "positive integer"]),
    ({"00_sample": {"sampling": {"top_p": 1.5}}}, [],
     ["00_sample.sampling.top_p: got 1.5", "0 < top_p <= 1"]),
    ({}, ["00_sample.sampling.temperature=.nan"], ["temperature: got nan", "finite number"]),
    ({}, ["04_proto.lr=.inf"], ["04_proto.lr: got inf", "finite number"]),
    ({"defaults": {"dtype": "bf16"}}, [],
     ["defaults.dtype: got 'bf16'", "auto, float32, bfloat16, float16", "did you mean 'bfloat16'"]),
    ({"defaults": {"device": "gpu"}}, [], ["defaults.device: got 'gpu'", "cuda:N"]),
    ({"00_sample": {"task": {"format": "boxd"}}}, [],
     ["00_sample.task.format: got 'boxd'", "boxed, structured"]),
    ({"00_sample": {"dataset": ["arith"]}}, [], ["00_sample.dataset: got ['arith']", "mapping"]),
    ({}, ["00_sample.sampling.temperature"], ["expected section.key=value"]),
    ({}, ["temperature=1"], ["must name a section and a key"]),
    ({}, ["00_sample.on_config_change=keep"], ["refuse, new_dir, overwrite"]),
])
def test_bad_config_names_key_value_and_allowed(write_config, data, overrides, expected):
    with pytest.raises(ConfigError) as info:
        load_config(write_config(data), overrides)
    for fragment in expected:
        assert fragment in str(info.value)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="not found; pass --config"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("00_sample: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_yaml_is_read_safely(tmp_path):
    evil = tmp_path / "evil.yaml"
    evil.write_text("defaults: !!python/object/apply:os.system ['echo hacked']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(evil)


def test_script_reports_config_error_without_traceback(write_config):
    path = write_config({"00_sample": {"temprature": 1}})
    proc = subprocess.run([sys.executable, "exp/00-sample.py", "--config", str(path)],
                          capture_output=True, text=True, cwd=REPO_ROOT)
    assert proc.returncode == 2
    assert "00_sample.temprature: unknown key" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_import_rl_onoff_does_not_import_torch():
    code = ("import sys, rl_onoff, rl_onoff.config, rl_onoff.data, rl_onoff.tasks, rl_onoff.stats;"
            "import rl_onoff.tracking, rl_onoff.cli, rl_onoff.stage, rl_onoff.rewards;"
            "print(sorted(m for m in ('torch', 'transformers', 'math_verify', 'sympy') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_run_validates_only_its_own_section(write_config):
    """A bad 05 setting does not stop 00; loading 05 reports it."""
    path = write_config({"05_entropy": {"lr": -1}})
    assert load_config(path, section="00_sample")["00_sample"].num_samples == 8
    with pytest.raises(ConfigError, match="05_entropy.lr: got -1"):
        load_config(path, section="05_entropy")
    with pytest.raises(ConfigError, match="05_entropy.lr: got -1"):
        load_config(path)  # no section: every one


def test_later_config_files_override_earlier_ones_then_set(write_config, tmp_path):
    base = write_config({"00_sample": {"num_samples": 3, "sampling": {"temperature": 0.5,
                                                                      "top_p": 0.9}}})
    more = tmp_path / "more.yaml"
    more.write_text("00_sample:\n  sampling:\n    temperature: 0.7\n")
    cfg = load_config([base, more], ["00_sample.num_samples=5"])
    s = cfg["00_sample"]
    assert (s.num_samples, s.sampling.temperature, s.sampling.top_p) == (5, 0.7, 0.9)


def test_relative_paths_resolve_against_the_config_files_folder(tmp_path):
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "my.yaml").write_text("00_sample:\n  output_dir: out/00\n")
    cfg = load_config(folder / "my.yaml")
    assert cfg.resolve(cfg["00_sample"].output_dir) == folder / "out" / "00"
    assert cfg.resolve("/abs/x") == Path("/abs/x")


def test_a_file_extends_another_and_paths_start_at_the_base(tmp_path):
    (tmp_path / "base.yaml").write_text("00_sample:\n  num_samples: 3\n  output_dir: out\n")
    (tmp_path / "recipes").mkdir()
    recipe = tmp_path / "recipes" / "r.yaml"
    recipe.write_text("extends: ../base.yaml\n00_sample:\n  sampling: {temperature: 0.5}\n")
    cfg = load_config(recipe, section="00_sample")
    s = cfg["00_sample"]
    assert (s.num_samples, s.sampling.temperature) == (3, 0.5)
    assert cfg.resolve(s.output_dir) == tmp_path / "out"
    recipe.write_text("extends: r.yaml\n")
    with pytest.raises(ConfigError, match="loops back"):
        load_config(recipe)
