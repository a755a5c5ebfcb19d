"""05-entropy exact: the probe's own code on a policy whose entropies are known exactly.

The policy is tabular (`TabularPolicy`: the previous token is the state) with
an end token: a response stops at EOS (the last token) or after `max_length`
tokens. Every response can be listed, so each entropy kind (sequence,
per-response token mean, length-weighted token) is an exact, differentiable
sum over them. Each run draws fresh U, E and E' batches and calls `probe` (the
same estimator, optimizer direction and real torch step as for a language
model); the exact change after the real step and the exact first-order change
grad H . Dtheta are the truths. Over the runs:

    bias          z_k = (delta-H1_k - exact first order_k) / SE_cond_k: mean 0 if unbiased
    calibration   SD of those z: 1 when SE_cond is right
    held-out      (Delta-H'_k - exact change_k) / SE'_k: the held-out truth itself checked
"""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import torch

from rl_onoff.entropy import analysis
from rl_onoff.entropy.estimators import KINDS
from rl_onoff.entropy.policy import Group, trainable
from rl_onoff.entropy.probe import PhaseTimer, ProbeSettings, prepare_update, probe
from rl_onoff.entropy.tabular import TabularPolicy
from rl_onoff.entropy.update import OptimizerSpec, Updater

PROMPT, REWARDED = 0, 1      # responses start from state 0; reward 1 when token 1 appears


class Enumeration:
    """Every response of an EOS-terminated tabular policy, as index tensors."""

    def __init__(self, vocab: int, max_length: int, prompt: int = PROMPT):
        eos, words = vocab - 1, range(vocab - 1)
        seqs = [list(p) + [eos] for k in range(max_length) for p in itertools.product(words, repeat=k)]
        seqs += [list(p) for p in itertools.product(words, repeat=max_length)]
        self.responses = seqs
        pad = [s + [eos] * (max_length - len(s)) for s in seqs]
        self.tokens = torch.tensor(pad)
        self.prev = torch.cat([torch.full((len(seqs), 1), prompt), self.tokens[:, :-1]], 1)
        self.mask = torch.tensor([[1.0] * len(s) + [0.0] * (max_length - len(s)) for s in seqs],
                                 dtype=torch.float64)

    def entropies(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        """The three entropy kinds of softmax(z), summed over all responses (differentiable)."""
        logp_table = z.log_softmax(-1)
        h = -(logp_table.exp() * logp_table).sum(-1)
        logp = (logp_table[self.prev, self.tokens] * self.mask).sum(-1)
        s, length = (h[self.prev] * self.mask).sum(-1), self.mask.sum(-1)
        p = logp.exp()
        return {"sequence": -(p * logp).sum(), "token_mean": (p * s / length).sum(),
                "token_weighted": (p * s).sum() / (p * length).sum()}


def sample_groups(policy: TabularPolicy, count: int, g: int, max_length: int,
                  generator: torch.Generator, score: bool) -> list[Group]:
    """`count` prompts (all state 0), G responses each, stopping at EOS; reward: token 1 seen."""
    eos = policy.z.shape[0] - 1
    probs = policy.z.detach().softmax(-1)
    groups = []
    for _ in range(count):
        state, alive = torch.full((g,), PROMPT), torch.ones(g, dtype=torch.bool)
        tokens = [[] for _ in range(g)]
        for _ in range(max_length):
            state = torch.multinomial(probs[state], 1, generator=generator).squeeze(-1)
            for i in alive.nonzero().flatten().tolist():
                tokens[i].append(int(state[i]))
            alive &= state != eos
            if not alive.any():
                break
        rewards = [float(REWARDED in y) for y in tokens] if score else []
        groups.append(Group(prompt_ids=[PROMPT], responses=tokens, rewards=rewards))
    return groups


class ExactTruth:
    """The exact entropies of the policy as it is now, and their gradients in its logits."""

    def __init__(self, enum: Enumeration, policy: TabularPolicy):
        self.enum, self.policy = enum, policy

    def __call__(self) -> dict[str, float]:
        with torch.no_grad():
            return {k: float(v) for k, v in self.enum.entropies(self.policy.z).items()}

    def gradients(self) -> dict[str, torch.Tensor]:
        z = self.policy.z.detach().clone().requires_grad_(True)
        h = self.enum.entropies(z)
        return {k: torch.autograd.grad(h[k], z, retain_graph=True)[0].reshape(-1) for k in KINDS}


@dataclasses.dataclass
class Setup:
    """What every exact run shares: the tabular policy, its enumeration, the optimizer."""
    policy: TabularPolicy
    enum: Enumeration
    truth: ExactTruth
    updater: Updater
    settings: ProbeSettings

    @classmethod
    def of(cls, cfg) -> Setup:
        c = cfg.exact
        gen = torch.Generator().manual_seed(cfg.seed)
        policy = TabularPolicy(torch.randn(c.vocab, c.vocab, generator=gen, dtype=torch.float64))
        enum = Enumeration(c.vocab, c.max_length)
        updater = Updater(trainable(policy), OptimizerSpec(cfg.optimizer, tuple(cfg.betas),
                                                           cfg.eps, cfg.weight_decay))
        objective = dataclasses.replace(cfg.objective(), max_new_tokens=c.max_length)
        settings = ProbeSettings(lr=c.lr, objective=objective, min_ess_share=cfg.min_ess_share)
        return cls(policy, enum, ExactTruth(enum, policy), updater, settings)

    def sample(self, cfg, count: int, generator: torch.Generator, score: bool) -> list[Group]:
        c = cfg.exact
        return sample_groups(self.policy, count, c.num_samples, c.max_length, generator, score)

    def describe(self, cfg) -> dict:
        c = cfg.exact
        return {"vocab": c.vocab, "max_length": c.max_length,
                "responses": len(self.enum.responses), "entropy": self.truth()}


def run_exact(cfg, progress: bool = True) -> dict:
    """`cfg.exact.runs` probe runs on the tabular policy; per-run rows and the verdicts
    (k > 1 PPO steps: `exact_path.run_exact_path`)."""
    from tqdm import tqdm

    if cfg.ppo_steps > 1:
        from rl_onoff.entropy.exact_path import run_exact_path

        return run_exact_path(cfg, progress)
    c = cfg.exact
    setup = Setup.of(cfg)
    policy, updater, settings = setup.policy, setup.updater, setup.settings
    grad_h = setup.truth.gradients()
    exact = setup.truth

    rows, skipped = [], 0
    for r in tqdm(range(c.runs), desc="05-entropy exact", unit="run", disable=not progress):
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + r)
        u_groups = setup.sample(cfg, c.batch_u, gen, True)
        e_groups = setup.sample(cfg, c.batch_e, gen, False)
        h_groups = setup.sample(cfg, c.batch_e, gen, False)
        try:
            update = prepare_update(policy, u_groups, updater, settings, PhaseTimer())
        except ValueError:   # no reward signal in U: no step to predict
            skipped += 1
            continue
        result = probe(policy, update, e_groups, updater, settings, heldout_groups=h_groups,
                       exact=exact)
        rows.append({"run": r, **{kind: {
            "delta_h1": result["delta_h1"][kind]["value"],
            "se_cond": result["delta_h1"][kind]["se_cond"],
            "se_total": result["delta_h1"][kind]["se_total"],
            "held_out": result["held_out"][kind]["value"],
            "held_out_se": result["held_out"][kind]["se"],
            "linearisation": result["linearisation_check"][kind]["value"],
            "exact_first_order": c.lr * float(grad_h[kind] @ update.direction),
            "exact_change": result["exact"]["change"][kind]} for kind in KINDS},
            "ess_min_share": result["held_out"]["ess"]["min_share"]})
    if len(rows) < 3:
        raise RuntimeError(f"exact: only {len(rows)} of {c.runs} runs had a reward signal in U")
    kinds = {kind: summarise_kind([row[kind] for row in rows], c.alpha, c.batch_e) for kind in KINDS}
    return {"runs": rows, "skipped_no_signal": skipped, "policy": setup.describe(cfg), "lr": c.lr,
            "alpha": c.alpha, "kinds": kinds}


def summarise_kind(rows: list[dict], alpha: float, prompts: int) -> dict:
    """Bias and calibration of delta-H1 against the exact first-order change (SE_total against
    the spread of delta-H1 over runs, U and E both fresh); the held-out
    truth against the exact change (z over `prompts` prompts: Student-t, SD sqrt((m-1)/(m-3))); how far the linearisation check and the exact change sit
    from delta-H1 (the first shares E's noise, so it always looks close)."""
    get = {k: np.array([row[k] for row in rows]) for k in rows[0]}
    first, fo, change = get["delta_h1"], get["exact_first_order"], get["exact_change"]
    t_sd = analysis.student_sd(prompts)
    bias = analysis.z_summary((first - fo) / get["se_cond"], alpha, t_sd)
    held = analysis.z_summary((get["held_out"] - change) / get["held_out_se"], alpha, t_sd)
    gap, gap_se = analysis.mean_se(first - fo)
    scale = float(np.mean(np.abs(fo)))
    entry = {
        "delta_h1_vs_exact_first_order": bias, "held_out_vs_exact_change": held,
        "mean_gap": gap, "se_gap": gap_se, "relative_bias": gap / scale, "se_relative_bias": gap_se / scale,
        "mean_abs_exact_first_order": scale,
        "second_order_share": float(np.mean(np.abs(change - fo)) / scale),
        "median_rel_linearisation_vs_delta_h1": float(np.median(np.abs(get["linearisation"] / first - 1))),
        "median_rel_exact_vs_delta_h1": float(np.median(np.abs(change / first - 1))),
        "correlation_linearisation": float(np.corrcoef(first, get["linearisation"])[0, 1]),
        "correlation_exact": float(np.corrcoef(first, change)[0, 1]),
    }
    if all(v is not None for v in get["se_total"]):
        total = np.asarray(get["se_total"], dtype=float)
        entry["se_total_over_sd"] = float(np.sqrt(np.mean(total ** 2)) / np.std(first, ddof=1))
    entry["verdict"] = (
        f"delta-H1 {'unbiased' if bias['unbiased'] else 'BIASED'} against the exact first-order "
        f"change (bias {entry['relative_bias']:+.1%} +- {entry['se_relative_bias']:.1%}, mean z "
        f"{bias['mean']:+.2f} +- {bias['se_mean']:.2f}); SE_cond "
        f"{'calibrated' if bias['calibrated'] else 'MISCALIBRATED'} (SD z {bias['sd']:.2f} +- "
        f"{bias['se_sd']:.2f}, t reference {t_sd:.2f}); held-out truth {'agrees with' if held['unbiased'] else 'DIFFERS from'}"
        f" the exact change (mean z {held['mean']:+.2f}, SD {held['sd']:.2f}); "
        f"{len(rows)} runs")
    entry["unbiased"] = bias["unbiased"]
    entry["calibrated"] = bias["calibrated"]
    entry["passes"] = bias["unbiased"] and bias["calibrated"]
    return entry
