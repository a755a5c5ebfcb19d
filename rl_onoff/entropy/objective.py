"""The objective a trainer ascends on the U batch: its gradient is the step 05 predicts.

Per token t of response i (verl's compute_policy_loss and kl_penalty, as ascent):

    j_it = min(rho_it A_i, clip(rho_it, 1 - eps, 1 + eps_high) A_i)   PPO-clip (DAPO: eps_high)
           + entropy_coef * H_it  -  kl_coef * KL_it
    rho_it = pi_theta(y_it) / pi_old(y_it)
    J = sum_i c_i sum_t j_it  per prompt, averaged over prompts

pi_old is the sampling policy theta_0 (the U batch's log-probs stored once); at
theta_0 every rho is 1, so the gradient is sum_i c_i A_i grad log pi(y_i): the
plain policy gradient. The advantage A (over a prompt's G responses):

    std    (r - mean r) / (std r + 1e-6)         GRPO
    none   r - mean r                            Dr. GRPO
    rloo   r - mean of the other responses' r    RLOO (= G/(G-1) (r - mean r))

and c_i, how the tokens are aggregated (verl's loss_agg_mode names):

    seq-mean-token-sum       1 / G                  the sequence-level policy gradient
    seq-mean-token-mean      1 / (G L_i)            GRPO: each response's token mean
    token-mean               1 / (G mean L)         DAPO: token mean over the (mini)batch
    seq-mean-token-sum-norm  1 / (G max_new_tokens) Dr. GRPO: a constant normaliser

The entropy bonus uses the per-token full-vocabulary entropies through the logits
only (no score term), as trainers compute it. The KL term, per token with
d = log pi_theta(y_t) - log pi_ref(y_t) (verl's names):

    k1  d                       "kl"
    k2  d^2 / 2                 "mse"
    k3  exp(-d) + d - 1         "low_var_kl" (GRPO's; verl's clamp to [-10, 10] is left out)

The reference is theta_0, the policy the probe starts from (GRPO's frozen initial
policy when probing from it); a separate reference model is not supported. With
the reference at theta_0, k2's and k3's gradients are exactly 0 at the first step
(k1's is beta grad log pi(y_t) per sample, 0 only in expectation), so the KL term
acts from the second step of a PPO path on.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rl_onoff.entropy.policy import Group, TokenTerms, flat, token_terms

ADVANTAGES = ("std", "none", "rloo")
AGGREGATIONS = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum",
                "seq-mean-token-sum-norm")
KL_ESTIMATORS = ("k1", "k2", "k3")


def kl_penalty(logp: torch.Tensor, ref_logp: torch.Tensor, estimator: str) -> torch.Tensor:
    """Per-token KL(pi_theta || pi_ref) estimate on tokens sampled from the old policy."""
    d = logp - ref_logp
    if estimator == "k1":
        return d
    if estimator == "k2":
        return 0.5 * d * d
    if estimator == "k3":
        return torch.expm1(-d) + d
    raise ValueError(f"kl_estimator {estimator!r}: allowed {', '.join(KL_ESTIMATORS)}")


@dataclass(frozen=True)
class Objective:
    advantage: str = "std"
    loss_aggregation: str = "token-mean"
    entropy_coef: float = 0.0
    max_new_tokens: int = 96            # Dr. GRPO's normaliser
    clip_epsilon: float = 0.2           # PPO-clip: rho in [1 - eps, 1 + eps_high] (verl clip_ratio)
    clip_epsilon_high: float | None = None   # DAPO's asymmetric upper clip; None: clip_epsilon
    kl_coef: float = 0.0                # beta
    kl_estimator: str = "k3"            # k1 | k2 | k3 (verl's low_var_kl)

    @property
    def band(self) -> tuple[float, float]:
        """The ratio band [1 - eps, 1 + eps_high] outside which PPO-clip stops the gradient."""
        high = self.clip_epsilon if self.clip_epsilon_high is None else self.clip_epsilon_high
        return 1.0 - self.clip_epsilon, 1.0 + high

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

    def surrogate(self, terms: TokenTerms, rewards, mean_length: float,
                  old_logp: torch.Tensor | None = None) -> torch.Tensor:
        """J of one group. `old_logp`: the per-token log-probs at theta_0 (pi_old and the KL
        reference); None: the current weights are theta_0 (every ratio 1)."""
        c = self.token_weights(terms.lengths, mean_length)
        old = terms.logp.detach() if old_logp is None else old_logp
        adv = self.advantages(rewards).to(terms.logp)[:, None]
        ratio = torch.exp(terms.logp - old)
        per_token = torch.minimum(ratio * adv, ratio.clamp(*self.band) * adv)
        if self.entropy_coef:
            per_token = per_token + self.entropy_coef * terms.entropy
        if self.kl_coef:
            per_token = per_token - self.kl_coef * kl_penalty(terms.logp, old, self.kl_estimator)
        return (c * (per_token * terms.mask).sum(-1)).sum()

    def clip_counts(self, terms: TokenTerms, rewards, old_logp: torch.Tensor) -> tuple[int, int, int]:
        """(tokens whose ratio is outside the band, tokens whose gradient the clip stops (verl's
        pg_clipfrac: the clipped branch is the min), tokens) of one group."""
        with torch.no_grad():
            ratio = torch.exp(terms.logp - old_logp)
            low, high = self.band
            adv = self.advantages(rewards).to(ratio)[:, None].expand_as(ratio)
            on = terms.mask > 0
            outside = ((ratio < low) | (ratio > high)) & on
            clipped = (((adv > 0) & (ratio > high)) | ((adv < 0) & (ratio < low))) & on
            return int(outside.sum()), int(clipped.sum()), int(on.sum())

    def gradients(self, model, groups: list[Group], params, temperature: float,
                  covariances: list | None = None, old_logps: list | None = None,
                  clip_counts: list | None = None):
        """Each group's gradient of J as one flat vector (one backward per group); appends
        Cov_i(log pi(y_i), A_i) per group to `covariances` when given (Cui et al.'s term).
        `old_logps`: per group, the per-token log-probs at theta_0 (a PPO step away from it);
        `clip_counts`: a list to which each group's `clip_counts` are appended."""
        mean_length = sum(len(r) for g in groups for r in g.responses) / sum(
            len(g.responses) for g in groups)
        for index, group in enumerate(groups):
            adv = self.advantages(group.rewards)
            old = old_logps[index] if old_logps is not None else None
            if (not self.entropy_coef and not self.kl_coef and clip_counts is None
                    and not bool(adv.abs().gt(0).any())):
                if covariances is not None:
                    covariances.append(0.0)
                yield flat([None] * len(params), params)   # no signal: skip the forward pass
                continue
            terms = token_terms(model, group, temperature)
            if covariances is not None:
                logp = terms.seq_logp.detach()
                covariances.append(float(((logp - logp.mean()) * (adv - adv.mean())).sum()
                                         / (len(adv) - 1)))
            if clip_counts is not None:
                clip_counts.append(self.clip_counts(terms, group.rewards,
                                                     terms.logp.detach() if old is None else old))
            loss = self.surrogate(terms, group.rewards, mean_length, old)
            yield flat(torch.autograd.grad(loss, params, allow_unused=True), params)
