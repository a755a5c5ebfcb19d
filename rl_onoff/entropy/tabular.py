"""A tabular softmax policy whose entropy is known in closed form, to check the estimators.

pi(y_t | y_<t) = softmax(Z[y_{t-1}]): the previous token is the state. It
answers the same call as a Hugging Face causal LM (`model(input_ids=...).logits`),
so the estimators run on it unchanged, while `exact_entropy` gives the true
sequence entropy (and, through autograd, its exact gradient) to compare with.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch

from rl_onoff.entropy.policy import Group


class TabularPolicy(torch.nn.Module):
    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.z = torch.nn.Parameter(logits.detach().clone().double())

    def forward(self, input_ids, **_):
        return SimpleNamespace(logits=self.z[input_ids])

    @torch.no_grad()
    def sample(self, prompt: int, length: int, count: int, generator) -> list[list[int]]:
        """`count` responses of `length` tokens after the one-token prompt."""
        probs, state, out = self.z.softmax(-1), torch.full((count,), prompt), []
        for _ in range(length):
            state = torch.multinomial(probs[state], 1, generator=generator).squeeze(-1)
            out.append(state)
        return torch.stack(out, 1).tolist()

    def groups(self, count: int, g: int, length: int, seed: int,
               rewards: torch.Tensor | None = None) -> list[Group]:
        """`count` groups of G responses from state 0; reward: rewards[last token]."""
        gen = torch.Generator().manual_seed(seed)
        out = []
        for _ in range(count):
            responses = self.sample(0, length, g, gen)
            r = [float(rewards[y[-1]]) for y in responses] if rewards is not None else []
            out.append(Group(prompt_ids=[0], responses=responses, rewards=r))
        return out


def exact_entropy(z: torch.Tensor, prompt: int, length: int) -> torch.Tensor:
    """Sequence entropy of `length` steps from `prompt`: sum_t mu_t . h, mu the state marginals."""
    p = z.softmax(-1)
    h = -(p * p.log()).sum(-1)
    mu = torch.zeros(z.shape[0], dtype=z.dtype)
    mu[prompt] = 1.0
    total = torch.zeros((), dtype=z.dtype)
    for _ in range(length):
        total = total + mu @ h
        mu = mu @ p
    return total


def exact_first_order(policy: TabularPolicy, reward: torch.Tensor, g: int) -> float:
    """grad H . E[g_U] for a bandit (one step from state 0) in closed form:
    E[g_U] = (1 - 1/G) pi * (r - pi.r) on row 0 (A = r - mean over the group)."""
    z = policy.z.detach().clone().requires_grad_(True)
    (grad_h,) = torch.autograd.grad(exact_entropy(z, 0, 1), z)
    pi = z.detach()[0].softmax(-1)
    return float(grad_h[0] @ ((1 - 1 / g) * pi * (reward - pi @ reward)))


def bandit_first_order_runs(policy: TabularPolicy, reward: torch.Tensor, g: int, sizes, runs: int,
                            shared: bool) -> dict[int, list[float]]:
    """delta-H1 (SGD, lr 1, sequence entropy) of `runs` runs per batch size B = B_E = B_U, with
    E independent of U or E = U, through the real estimator code (for the batch-scaling test)."""
    from rl_onoff.entropy import estimators as est
    from rl_onoff.entropy.policy import trainable
    from rl_onoff.entropy.objective import Objective
    from rl_onoff.entropy.probe import PhaseTimer, ProbeSettings, prepare_update
    from rl_onoff.entropy.update import OptimizerSpec, Updater

    params = trainable(policy)
    updater = Updater(params, OptimizerSpec("sgd"))
    settings = ProbeSettings(lr=1.0, objective=Objective("none", "seq-mean-token-sum"))
    levels = {}
    for b in sizes:
        levels[b] = []
        for r in range(runs):
            seed = 1_000 * b + r
            u_groups = policy.groups(b, g, 1, seed, reward)
            try:
                update = prepare_update(policy, u_groups, updater, settings, PhaseTimer())
            except ValueError:   # no reward signal: the step, and so delta-H1, is 0
                levels[b].append(0.0)
                continue
            e_groups = u_groups if shared else policy.groups(b, g, 1, -seed - 1)
            dots = [float(grads["sequence"] @ update.direction)
                    for _, grads in est.entropy_gradients(policy, e_groups, params, 1.0)]
            levels[b].append(sum(dots) / len(dots))
    return levels
