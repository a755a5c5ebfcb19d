"""The objective a trainer ascends on the U batch: its gradient is the step 05 predicts.

    J = sum_i c_i A_i sum_t log pi(y_it)  +  entropy_coef * sum_i c_i sum_t H_it

per prompt, averaged over prompts. The advantage A (over a prompt's G responses):

    std    (r - mean r) / (std r + 1e-6)         GRPO
    none   r - mean r                            Dr. GRPO
    rloo   r - mean of the other responses' r    RLOO (= G/(G-1) (r - mean r))

and c_i, how the tokens are aggregated (verl's loss_agg_mode names):

    seq-mean-token-sum       1 / G                  the sequence-level policy gradient
    seq-mean-token-mean      1 / (G L_i)            GRPO: each response's token mean
    token-mean               1 / (G mean L)         DAPO: token mean over the batch (mean L: U's)
    seq-mean-token-sum-norm  1 / (G max_new_tokens) Dr. GRPO: a constant normaliser

The entropy bonus uses the per-token full-vocabulary entropies through the logits
only (no score term), as trainers compute it. A KL-to-reference term has zero
gradient at the reference, so a first step from it is unchanged by beta.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rl_onoff.entropy.policy import Group, TokenTerms, flat, token_terms

ADVANTAGES = ("std", "none", "rloo")
AGGREGATIONS = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum",
                "seq-mean-token-sum-norm")


@dataclass(frozen=True)
class Objective:
    advantage: str = "std"
    loss_aggregation: str = "token-mean"
    entropy_coef: float = 0.0
    max_new_tokens: int = 96            # Dr. GRPO's normaliser

    def advantages(self, rewards) -> torch.Tensor:
        r = torch.as_tensor(rewards, dtype=torch.float64)
        a = r - r.mean()
        if self.advantage == "std":
            return a / (r.std() + 1e-6) if len(r) > 1 else a
        if self.advantage == "rloo":
            return a * len(r) / (len(r) - 1)
        return a

    def token_weights(self, lengths: torch.Tensor, mean_length: float) -> torch.Tensor:
        """c_i: each response's weight on its summed per-token terms."""
        g = len(lengths)
        if self.loss_aggregation == "seq-mean-token-mean":
            return 1.0 / (g * lengths)
        scale = {"token-mean": mean_length, "seq-mean-token-sum": 1.0,
                 "seq-mean-token-sum-norm": float(self.max_new_tokens)}[self.loss_aggregation]
        return torch.full_like(lengths, 1.0 / (g * scale))

    def surrogate(self, terms: TokenTerms, rewards, mean_length: float) -> torch.Tensor:
        c = self.token_weights(terms.lengths, mean_length)
        j = (c * self.advantages(rewards).to(terms.logp) * terms.seq_logp).sum()
        if self.entropy_coef:
            j = j + self.entropy_coef * (c * terms.entropy.sum(-1)).sum()
        return j

    def gradients(self, model, groups: list[Group], params, temperature: float,
                  covariances: list | None = None):
        """Each U group's gradient of J as one flat vector (one backward per group); appends
        Cov_i(log pi(y_i), A_i) per group to `covariances` when given (Cui et al.'s term)."""
        mean_length = sum(len(r) for g in groups for r in g.responses) / sum(
            len(g.responses) for g in groups)
        for group in groups:
            adv = self.advantages(group.rewards)
            if not self.entropy_coef and not bool(adv.abs().gt(0).any()):
                if covariances is not None:
                    covariances.append(0.0)
                yield flat([None] * len(params), params)   # no signal: skip the forward pass
                continue
            terms = token_terms(model, group, temperature)
            if covariances is not None:
                logp = terms.seq_logp.detach()
                covariances.append(float(((logp - logp.mean()) * (adv - adv.mean())).sum()
                                         / (len(adv) - 1)))
            loss = self.surrogate(terms, group.rewards, mean_length)
            yield flat(torch.autograd.grad(loss, params, allow_unused=True), params)
