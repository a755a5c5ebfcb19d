"""05-entropy: predict how a policy-gradient update changes the policy's entropy, and check it.

    policy.py      the model as a function of its trainable parameters: per-token log-probs, entropies
    estimators.py  entropy on an E batch, its score-function gradient, the U batch's policy gradient
    update.py      the optimizer's update direction (SGD, Adam/AdamW with saved state) and the real step
    batches.py     drawing E and U batches: prompts from the dataset, G responses each, rewards
    probe.py       one run: delta-H1 = grad H . Dtheta with standard errors; the real step's
                   change on an independent E' batch (held-out truth) and on E (linearisation check)
    path.py        k PPO steps (minibatches x epochs): first-order terms summed along the real path,
                   and the trapezoid rule (second order) over the same batches plus one at theta_k
    exact.py       the exact mode: the same code on an enumerable policy with exact entropies
    exact_path.py  the exact mode for k > 1 steps: the path prediction against the exact change
    analysis.py    statistics over runs: 1/B_E bias test, SE calibration, z summaries, linearity
    plots.py       the figures
    modes.py       single, batch-scaling, sanity-check, eta-sweep, exact, debug

`import rl_onoff.entropy` stays light: torch is imported by the modules that need it.
"""

def mode_names() -> tuple[str, ...]:
    """The modes `05_entropy.mode` allows (read from the config schema: one list to maintain)."""
    import typing

    from rl_onoff.entropy.config import EntropyConfig

    return typing.get_args(typing.get_type_hints(EntropyConfig)["mode"])


def mode_argv(argv: list[str]) -> list[str]:
    """`05-entropy.py MODE [options]` -> the options plus `--set 05_entropy.mode=MODE`."""
    if argv and argv[0] in mode_names():
        return ["--set", f"05_entropy.mode={argv[0]}", *argv[1:]]
    return list(argv)


def run_entropy(config) -> dict:
    from rl_onoff.entropy.modes import run_entropy as run

    return run(config)
