"""The README's extension points and the example script work as shown."""

from __future__ import annotations

import subprocess
import sys

import pytest

from rl_onoff.config import REPO_ROOT, load_config


def test_the_library_tour_runs_and_reports_accuracy_with_an_interval():
    proc = subprocess.run([sys.executable, "examples/library_tour.py"], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "avg@4 " in proc.stdout and "pass@2" in proc.stdout


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """A user's own file holding a dataset loader and a reward, importable by name."""
    (tmp_path / "my_ext.py").write_text(
        "def questions(split, **options):\n"
        "    return [{'id': f'q{i}', 'question': f'What is {i} + {i}?', 'answer': str(2 * i)}\n"
        "            for i in range(5)]\n\n"
        "def short(responses):\n"
        "    return [1.0 if r.num_tokens < 10 else 0.0 for r in responses]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return "my_ext"


def test_a_users_dataset_is_one_file_and_a_name(user_module, write_config):
    from rl_onoff.stage import Stage

    path = write_config({"00_sample": {"dataset": {"name": f"{user_module}:questions",
                                                    "num_examples": 3}}})
    stage = Stage("00-sample", "00_sample", load_config(path, section="00_sample"))
    assert [r["answer"] for r in stage.load_dataset()] == ["0", "2", "4"]


def test_a_users_reward_is_one_file_and_a_name(user_module):
    from rl_onoff import rewards

    responses = [rewards.Response("3 + 4 = 7", "7", n, "eos", 96, "ok", True) for n in (5, 50)]
    assert rewards.get(f"{user_module}:short")(responses) == [1.0, 0.0]
    # combined with a registered reward and weights, as 03's `reward` + `shaping` do
    assert rewards.weighted("math_verify", {f"{user_module}:short": 0.5}, responses) == [1.5, 1.0]


def test_step_check_counts_right_worked_lines():
    from rl_onoff import rewards

    text = "19 + 6 = 25\n25 * 3 = 76\n76 - 10 = 66\nThe answer is \\boxed{66}."
    got = rewards.get("step_check")([rewards.Response(text, "", 20, "eos", 96, "ok", False)])
    assert got == [pytest.approx(2 / 3)]  # 25 * 3 = 76 is wrong; the other two are right


def test_unknown_names_say_what_exists(write_config):
    from rl_onoff import rewards
    from rl_onoff.config import ConfigError
    from rl_onoff.stage import Stage

    with pytest.raises(ConfigError, match="unknown reward 'math_verfy'.*did you mean 'math_verify'"):
        rewards.get("math_verfy")
    path = write_config({"00_sample": {"dataset": {"name": "nope:missing"}}})
    with pytest.raises(ConfigError, match="00_sample.dataset: dataset 'nope:missing': cannot import"):
        Stage("00-sample", "00_sample", load_config(path, section="00_sample")).load_dataset()
