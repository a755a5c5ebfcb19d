"""05-entropy's section of the YAML."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

from rl_onoff.config import (ConfigError, DatasetConfig, SamplingConfig, StageConfig, TaskConfig,
                             positive)


@dataclass
class EntropyScalingConfig:
    """05-entropy batch-scaling: delta-H1 at several B_E, `runs` E batches each, one U batch."""
    batch_e_values: list[int] = field(default_factory=lambda: [4, 8, 16, 32])
    runs: int = 8                       # E batches per B_E
    alpha: float = 0.01                 # significance level of the verdicts


@dataclass
class EntropySanityConfig:
    """05-entropy sanity-check: `runs` runs with fresh U and E, `runs` more with one fixed U."""
    runs: int = 12
    alpha: float = 0.01


@dataclass
class EntropySweepConfig:
    """05-entropy eta-sweep: the real step at each learning rate on one U and one E batch."""
    lrs: list[float] = field(default_factory=lambda: [1e-8, 1e-7, 1e-6, 3e-6, 1e-5, 3e-5, 1e-4,
                                                      3e-4, 1e-3])
    tolerance: float = 0.1              # "linear" while |Delta-H_true / delta-H1 - 1| <= this


@dataclass
class EntropyDebugConfig:
    """05-entropy debug: every mode at these small sizes, per-phase logs."""
    batch_e: int = 4
    batch_u: int = 4
    num_samples: int = 4
    max_new_tokens: int = 32
    runs: int = 3
    batch_e_values: list[int] = field(default_factory=lambda: [2, 4, 8])
    save_gradients: bool = True         # NPZ (float32) of g_U, the direction, grad H: the single run


@dataclass
class EntropyExactConfig:
    """05-entropy exact: the pipeline on an enumerable tabular policy whose entropies are exact."""
    runs: int = 200                     # runs with fresh U, E and E' (bias z, SE calibration)
    vocab: int = 5                      # tokens, the last one EOS; the previous token is the state
    max_length: int = 4                 # response tokens at most (vocab^max_length responses)
    batch_e: int = 16                   # B_E, and B_E' of the held-out batch
    batch_u: int = 8
    num_samples: int = 4                # G
    lr: float = 0.01                    # eta (the optimizer is the section's)
    alpha: float = 0.01                 # significance level of the verdicts


@dataclass
class EntropyConfig(StageConfig):
    """05-entropy: first-order entropy change of one policy-gradient step, validated."""
    mode: Literal["single", "batch-scaling", "sanity-check", "eta-sweep", "exact", "debug"] = "single"
    dataset: DatasetConfig = field(default_factory=lambda: DatasetConfig(split="train",
                                                                         num_examples=1000))
    task: TaskConfig = field(default_factory=TaskConfig)
    adapter: Optional[str] = None       # a LoRA adapter directory (needs peft): only it is trained
    precision: Literal["model", "float64"] = "float64"  # float64: cast the policy (exact truth at small eta)
    num_samples: int = 8                # G responses per prompt
    sampling: SamplingConfig = field(default_factory=SamplingConfig)  # the policy: softmax(logits / T)
    batch_size: int = 128               # sequences generated together
    batch_e: int = 16                   # B_E prompts in the entropy batch
    batch_u: int = 16                   # B_U prompts in the update batch
    batch_heldout: int = 16             # B_E' prompts in the held-out truth batch (fresh responses)
    share_batches: bool = False         # true: E is the U batch (biased; shows what the tests catch)
    reward: str = "math_verify"         # r(y) of the U batch: a name in rl_onoff.rewards or module:function
    min_ess_share: float = 0.5          # flag E' importance weights with ESS / G below this
    advantage: Literal["std", "none", "rloo"] = "std"   # GRPO | Dr. GRPO (r - mean r) | RLOO
    loss_aggregation: Literal["token-mean", "seq-mean-token-mean", "seq-mean-token-sum",
                              "seq-mean-token-sum-norm"] = "token-mean"   # verl's loss_agg_mode
    entropy_coef: float = 0.0           # entropy bonus: + coef x the aggregated token entropy
    clip_epsilon: float = 0.2           # PPO-clip band [1 - eps, 1 + eps_high] (verl's clip_ratio)
    clip_epsilon_high: Optional[float] = None   # DAPO's asymmetric upper clip; null: clip_epsilon
    ppo_minibatches: int = 1            # U split into this many minibatches of prompts, a step each
    ppo_epochs: int = 1                 # passes over the minibatches: k = minibatches x epochs steps
    kl_coef: float = 0.0                # beta of the KL-to-reference term (reference: theta_0)
    kl_estimator: Literal["k1", "k2", "k3"] = "k3"   # k3: verl's low_var_kl
    optimizer: Literal["sgd", "adam", "adamw"] = "adam"
    lr: float = 1e-6                    # eta of the step
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    weight_decay: float = 0.0
    optimizer_state: Optional[str] = None  # a torch Adam/AdamW state_dict file (moments, step)
    batch_scaling: EntropyScalingConfig = field(default_factory=EntropyScalingConfig)
    sanity_check: EntropySanityConfig = field(default_factory=EntropySanityConfig)
    eta_sweep: EntropySweepConfig = field(default_factory=EntropySweepConfig)
    exact: EntropyExactConfig = field(default_factory=EntropyExactConfig)
    debug: EntropyDebugConfig = field(default_factory=EntropyDebugConfig)
    output_dir: str = "exp/05-entropy/output"

    @property
    def ppo_steps(self) -> int:
        """k: the real optimizer steps of one PPO update (minibatches x epochs)."""
        return self.ppo_minibatches * self.ppo_epochs

    def objective(self):
        from rl_onoff.entropy.objective import Objective

        return Objective(self.advantage, self.loss_aggregation, self.entropy_coef,
                         self.sampling.max_new_tokens, self.clip_epsilon, self.clip_epsilon_high,
                         self.kl_coef, self.kl_estimator)

    def check(self, path: str) -> None:
        import importlib.util

        from rl_onoff.rewards import check_name

        StageConfig.check(self, path)
        check_name(self.reward, f"{path}.reward")
        for key in ("num_samples", "batch_e", "batch_u", "batch_size"):
            positive(getattr(self, key), f"{path}.{key}")
        for key in ("num_samples", "batch_e", "batch_u", "batch_heldout"):
            if getattr(self, key) < 2:
                raise ConfigError(f"{path}.{key}: got {getattr(self, key)}; allowed: >= 2 "
                                  "(baselines and standard errors need two or more)")
        if self.sampling.temperature <= 0 or not self.sampling.is_plain or self.sampling.stop:
            raise ConfigError(f"{path}.sampling: the probe's policy is softmax(logits / T) with "
                              "T > 0 and no top_p/top_k/min_p/stop (its entropy and gradient "
                              "are exact only then); set temperature > 0 and leave the filters off")
        if self.entropy_coef < 0:
            raise ConfigError(f"{path}.entropy_coef: got {self.entropy_coef}; allowed: >= 0")
        for key in ("lr", "eps"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"{path}.{key}: got {getattr(self, key)}; allowed: a positive number")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ConfigError(f"{path}.betas: got {self.betas}; allowed: two numbers in [0, 1)")
        if self.weight_decay < 0:
            raise ConfigError(f"{path}.weight_decay: got {self.weight_decay}; allowed: >= 0")
        if self.optimizer_state is not None and self.optimizer == "sgd":
            raise ConfigError(f"{path}.optimizer_state: an optimizer state holds Adam moments; "
                              "set optimizer to adam or adamw, or optimizer_state to null")
        if self.adapter is not None and importlib.util.find_spec("peft") is None:
            raise ConfigError(f"{path}.adapter: a LoRA adapter needs the peft package, which is "
                              "not installed: `pip install peft`, or set adapter: null")
        self._check_ppo(path)
        if not 0 <= self.min_ess_share <= 1:
            raise ConfigError(f"{path}.min_ess_share: got {self.min_ess_share}; allowed: 0 to 1")
        exact = self.exact
        for key in ("batch_e", "batch_u", "num_samples", "vocab"):
            if getattr(exact, key) < 2:
                raise ConfigError(f"{path}.exact.{key}: got {getattr(exact, key)}; allowed: >= 2")
        if exact.runs < 3 or not 1 <= exact.max_length or exact.vocab ** exact.max_length > 100_000:
            raise ConfigError(f"{path}.exact: runs {exact.runs}, vocab {exact.vocab}, max_length "
                              f"{exact.max_length}; allowed: runs >= 3, max_length >= 1 and "
                              "vocab^max_length <= 100000 (every response is enumerated)")
        if exact.lr <= 0 or not 0 < exact.alpha < 1:
            raise ConfigError(f"{path}.exact: lr {exact.lr}, alpha {exact.alpha}; allowed: "
                              "lr > 0, 0 < alpha < 1")
        scaling = self.batch_scaling
        if len(set(scaling.batch_e_values)) < 3 or min(scaling.batch_e_values) < 2:
            raise ConfigError(f"{path}.batch_scaling.batch_e_values: got {scaling.batch_e_values}; "
                              "allowed: at least 3 different sizes, each >= 2")
        for key, runs in (("batch_scaling.runs", scaling.runs),
                          ("sanity_check.runs", self.sanity_check.runs),
                          ("debug.runs", self.debug.runs)):
            if runs < 3:
                raise ConfigError(f"{path}.{key}: got {runs}; allowed: >= 3 (a spread needs runs)")
        for key, alpha in (("batch_scaling.alpha", scaling.alpha),
                           ("sanity_check.alpha", self.sanity_check.alpha)):
            if not 0 < alpha < 1:
                raise ConfigError(f"{path}.{key}: got {alpha}; allowed: 0 < alpha < 1")
        if len(self.eta_sweep.lrs) < 2 or min(self.eta_sweep.lrs) <= 0:
            raise ConfigError(f"{path}.eta_sweep.lrs: got {self.eta_sweep.lrs}; allowed: at least "
                              "2 positive learning rates")
        if self.eta_sweep.tolerance <= 0:
            raise ConfigError(f"{path}.eta_sweep.tolerance: got {self.eta_sweep.tolerance}; "
                              "allowed: a positive number (relative deviation)")
        debug = self.debug
        for key in ("batch_e", "batch_u", "num_samples"):
            if getattr(debug, key) < 2:
                raise ConfigError(f"{path}.debug.{key}: got {getattr(debug, key)}; allowed: >= 2")
        positive(debug.max_new_tokens, f"{path}.debug.max_new_tokens")
        if len(set(debug.batch_e_values)) < 3 or min(debug.batch_e_values) < 2:
            raise ConfigError(f"{path}.debug.batch_e_values: got {debug.batch_e_values}; "
                              "allowed: at least 3 different sizes, each >= 2")

    def _check_ppo(self, path: str) -> None:
        if not 0 < self.clip_epsilon < 1:
            raise ConfigError(f"{path}.clip_epsilon: got {self.clip_epsilon}; allowed: a number "
                              "in (0, 1) (the ratio band's lower edge 1 - eps must stay positive)")
        if self.clip_epsilon_high is not None and self.clip_epsilon_high <= 0:
            raise ConfigError(f"{path}.clip_epsilon_high: got {self.clip_epsilon_high}; allowed: "
                              "a positive number, or null (= clip_epsilon)")
        for key in ("ppo_minibatches", "ppo_epochs"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{path}.{key}: got {getattr(self, key)}; allowed: >= 1")
        if self.kl_coef < 0:
            raise ConfigError(f"{path}.kl_coef: got {self.kl_coef}; allowed: >= 0")
        if self.ppo_steps == 1:
            return
        if self.mode not in ("single", "exact"):
            raise ConfigError(f"{path}.ppo_minibatches/ppo_epochs: {self.ppo_steps} steps are "
                              f"predicted by modes single and exact only; mode {self.mode} "
                              "predicts one step: set both to 1, or mode to single or exact")
        key = "exact.batch_u" if self.mode == "exact" else "batch_u"
        batch = self.exact.batch_u if self.mode == "exact" else self.batch_u
        if batch < self.ppo_minibatches:
            raise ConfigError(f"{path}.ppo_minibatches: got {self.ppo_minibatches}, more than the "
                              f"{batch} prompts of {path}.{key}; allowed: at most {key}")
