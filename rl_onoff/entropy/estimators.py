"""The estimators: entropy on an E batch and its gradient (the U batch's step: objective.py).

Entropy of a prompt's response distribution, three kinds (the reported KINDS):

    sequence        H = E_y[-log pi(y)]                   (f(y) = -log pi(y))
    token_mean      H = E_y[mean_t H(pi(. | y_<t))]       per-response mean of the full-vocab
                                                          entropies (Rao-Blackwellised), then mean
    token_weighted  H = E[sum_t H_t] / E[L] over the batch: length-weighted, what trainers log
                    under token-mean loss aggregation (a ratio: built from the PARTS token_sum
                    (f = sum_t H_t) and length (f = L) by `combine`, linear to first order)

One function of theta serves for the estimate, its gradient and the ground
truth: on the fixed responses y_i ~ pi_0 of a group,

    change(theta) = mean_i [ (w_i - 1) (f_i(theta) - b_i) + f_i(theta) - f_i(theta_0) ],
    w_i = pi_theta(y_i) / pi_0(y_i),   b_i = mean_{j != i} f_j(theta_0)  (leave-one-out)

is the importance-weighted estimate of H(theta) - H(theta_0) (unbiased: b_i does
not depend on y_i). Its gradient at theta_0 is mean_i[(f_i - b_i) grad log pi(y_i)
+ grad f_i], the score-function estimate of grad H with a leave-one-out
baseline. So delta-H1 = grad change . Dtheta, and the ground truth is change()
evaluated after the real step; their difference is the Taylor remainder.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from rl_onoff.entropy.policy import Group, TokenTerms, flat, token_terms

KINDS = ("sequence", "token_mean", "token_weighted")
PARTS = ("sequence", "token_mean", "token_sum", "length")


def entropy_samples(terms: TokenTerms) -> dict[str, torch.Tensor]:
    """f(y_i) per response, for each part."""
    token_sum = terms.entropy.sum(-1)
    return {"sequence": -terms.seq_logp, "token_mean": token_sum / terms.lengths,
            "token_sum": token_sum, "length": terms.lengths}


def ratio_constants(anchors: list["Anchor"]) -> tuple[float, float]:
    """(R, L): the batch's length-weighted entropy mean(sum H) / mean(L) and mean length at theta_0."""
    s = float(np.mean([float(a.f["token_sum"].mean()) for a in anchors]))
    length = float(np.mean([float(a.f["length"].mean()) for a in anchors]))
    return s / length, length


def combine(parts: dict, ratio: float, length: float) -> dict:
    """Reported kinds from per-part values (numbers, arrays or gradient vectors). The first-order
    change of mean(S) / mean(L) is (dS - R dL) / L, so token_weighted is linear in the parts."""
    return {"sequence": parts["sequence"], "token_mean": parts["token_mean"],
            "token_weighted": (parts["token_sum"] - ratio * parts["length"]) / length}


def ratio_change(changes: dict, anchors: list["Anchor"]) -> float:
    """The finite change of mean(S) / mean(L) from per-prompt changes of S and L (not linearised)."""
    ratio, length = ratio_constants(anchors)
    s = ratio * length + float(np.mean(changes["token_sum"]))
    return s / (length + float(np.mean(changes["length"]))) - ratio


def ess_share(log_weights: torch.Tensor) -> float:
    """Effective sample size of importance weights as a share of n: (sum w)^2 / (n sum w^2)."""
    w = torch.exp(log_weights - log_weights.max())
    return float(w.sum() ** 2 / (len(w) * (w * w).sum()))


def leave_one_out(x: torch.Tensor) -> torch.Tensor:
    """b_i = mean of the other entries: a baseline independent of sample i."""
    if len(x) < 2:
        raise ValueError("a leave-one-out baseline needs at least 2 responses per prompt")
    return (x.sum() - x) / (len(x) - 1)


@dataclass
class Anchor:
    """A group's quantities at theta_0, held fixed while theta moves."""
    seq_logp: torch.Tensor              # log pi_0(y_i)
    f: dict[str, torch.Tensor]          # f_i(theta_0)
    baseline: dict[str, torch.Tensor]   # b_i

    @classmethod
    def at(cls, terms: TokenTerms) -> "Anchor":
        f = {k: v.detach().clone() for k, v in entropy_samples(terms).items()}
        return cls(seq_logp=terms.seq_logp.detach(), f=f,
                   baseline={k: leave_one_out(v) for k, v in f.items()})

    def entropy(self) -> dict[str, float]:
        """The group's mean f per part at theta_0."""
        return {k: float(v.mean()) for k, v in self.f.items()}


def entropy_change(terms: TokenTerms, anchor: Anchor) -> dict[str, torch.Tensor]:
    """Importance-weighted E_theta[f] - E_theta_0[f] on the anchor's responses, per part."""
    excess = torch.expm1(terms.seq_logp - anchor.seq_logp)   # w - 1, exact near 0
    f = entropy_samples(terms)
    return {k: (excess * (f[k] - anchor.baseline[k]) + (f[k] - anchor.f[k])).mean() for k in PARTS}


def entropy_gradients(model, groups: list[Group], params, temperature: float):
    """Yield (anchor, {part: flat grad of the change at theta_0}) per E group."""
    for group in groups:
        terms = token_terms(model, group, temperature)
        anchor = Anchor.at(terms)
        change = entropy_change(terms, anchor)
        grads = {}
        for i, part in enumerate(PARTS):
            g = torch.autograd.grad(change[part], params, allow_unused=True,
                                    retain_graph=i < len(PARTS) - 1)
            grads[part] = flat(g, params)
        yield anchor, grads


@torch.no_grad()
def anchors_at(model, groups: list[Group], temperature: float) -> list[Anchor]:
    """The anchors of a batch at the current weights (the held-out E' batch: no gradient)."""
    return [Anchor.at(token_terms(model, group, temperature)) for group in groups]


@torch.no_grad()
def entropy_changes(model, groups: list[Group], anchors: list[Anchor],
                    temperature: float) -> tuple[dict[str, list[float]], list[float], list[float]]:
    """Per group: the importance-weighted change of each part at the model's current weights,
    the effective sample share of its importance weights, and Cov_i(log pi_0(y_i), Delta log
    pi(y_i)) (Cui et al.'s covariance with the real step's change of log-probability:
    -Cov is the sequence entropy's first-order change)."""
    out, ess, cov = {k: [] for k in PARTS}, [], []
    for group, anchor in zip(groups, anchors):
        terms = token_terms(model, group, temperature)
        change = entropy_change(terms, anchor)
        for part in PARTS:
            out[part].append(float(change[part]))
        log_w = terms.seq_logp - anchor.seq_logp
        ess.append(ess_share(log_w))
        x = anchor.seq_logp
        cov.append(float(((x - x.mean()) * (log_w - log_w.mean())).sum() / (len(x) - 1)))
    return out, ess, cov
