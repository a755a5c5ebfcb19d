"""The update direction of one optimizer step, and the real step that checks it.

`direction(g)` is the change of the trainable parameters per unit learning
rate when the optimizer ascends the surrogate whose gradient is g (the
optimizer minimises -J, so it is handed -g). SGD gives g; Adam gives its
bias-corrected m / (sqrt(v) + eps), from fresh moments or from the moments and
step count in a saved optimizer state. Both are exactly linear in the learning
rate, so the step is eta * direction. `step` takes that step with the real
torch optimizer, so the ground truth never relies on our formula, and the
reported mismatch says how well the two agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from rl_onoff.entropy.policy import flat, unflat

OPTIMIZERS = ("sgd", "adam", "adamw")


@dataclass(frozen=True)
class OptimizerSpec:
    name: str = "adam"                      # sgd | adam | adamw
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0               # sgd/adam: L2 added to the gradient; adamw: decoupled
    state_path: str | None = None           # a torch optimizer state_dict (adam/adamw)

    def torch_optimizer(self, params, lr: float) -> torch.optim.Optimizer:
        if self.name == "sgd":
            return torch.optim.SGD(params, lr=lr, weight_decay=self.weight_decay)
        cls = torch.optim.Adam if self.name == "adam" else torch.optim.AdamW
        return cls(params, lr=lr, betas=tuple(self.betas), eps=self.eps,
                   weight_decay=self.weight_decay)


class Updater:
    """Direction and real step for one optimizer, over a fixed list of parameters."""

    def __init__(self, params: list[torch.nn.Parameter], spec: OptimizerSpec):
        if spec.name not in OPTIMIZERS:
            raise ValueError(f"optimizer {spec.name!r}: allowed {', '.join(OPTIMIZERS)}")
        self.params, self.spec = params, spec
        self.saved_state = load_state(spec, params) if spec.state_path else None
        self.m, self.v, self.steps = self._moments()

    def _moments(self):
        """Flat Adam moments and the step count before this step (None and 0 when fresh: zero
        moments are not stored, two model-sized vectors saved)."""
        if self.spec.name == "sgd" or self.saved_state is None:
            return None, None, 0
        opt = self.optimizer(1.0)
        states = [opt.state[p] for p in self.params]
        m = flat([s["exp_avg"] for s in states], self.params)
        v = flat([s["exp_avg_sq"] for s in states], self.params)
        steps = {int(s["step"]) for s in states}
        if len(steps) != 1:
            raise ValueError(f"optimizer state {self.spec.state_path}: parameters have different "
                             f"step counts {sorted(steps)}")
        return m, v, steps.pop()

    def optimizer(self, lr: float) -> torch.optim.Optimizer:
        """A torch optimizer over the parameters, from the saved state when there is one (a PPO
        path keeps one across its steps, so the moments carry)."""
        opt = self.spec.torch_optimizer(self.params, lr)
        if self.saved_state is not None:
            opt.load_state_dict(self.saved_state)
            for group in opt.param_groups:   # the YAML's hyperparameters, the file's moments
                group.update(lr=lr, betas=tuple(self.spec.betas), eps=self.spec.eps,
                             weight_decay=self.spec.weight_decay)
        return opt

    def direction(self, grad: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        """Parameter change per unit learning rate for ascent gradient `grad` at `theta`."""
        spec, g = self.spec, -grad            # the optimizer minimises -J
        if spec.name in ("sgd", "adam") and spec.weight_decay:
            g = g + spec.weight_decay * theta
        if spec.name == "sgd":
            return -g
        beta1, beta2 = spec.betas
        t = self.steps + 1
        m, v = (1 - beta1) * g, (1 - beta2) * g * g
        if self.m is not None:
            m, v = m + beta1 * self.m, v + beta2 * self.v
        denom = v.sqrt() / (1 - beta2 ** t) ** 0.5 + spec.eps
        u = -(m / (1 - beta1 ** t)) / denom
        if spec.name == "adamw" and spec.weight_decay:
            u = u - spec.weight_decay * theta
        return u

    def step(self, grad: torch.Tensor, lr: float) -> None:
        """One real optimizer step with learning rate `lr` on ascent gradient `grad`."""
        ascend(self.optimizer(lr), self.params, grad)


def ascend(opt: torch.optim.Optimizer, params, grad: torch.Tensor) -> None:
    """One step of `opt` up the flat ascent gradient `grad` (it minimises -J)."""
    for p, g in zip(params, unflat(-grad, params)):
        p.grad = g.detach().clone().to(p.dtype)
    opt.step()
    for p in params:
        p.grad = None


def parameters_vector(params) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in params]).clone()


@torch.no_grad()
def restore(params, vector: torch.Tensor) -> None:
    for p, value in zip(params, unflat(vector, params)):
        p.copy_(value)


def load_state(spec: OptimizerSpec, params) -> dict:
    """A saved torch Adam/AdamW state_dict, checked against the trainable parameters.

    It must be a single parameter group over the trainable parameters in
    `model.parameters()` order (as `torch.optim.Adam(trainable).state_dict()` saves it).
    """
    path = Path(spec.state_path).expanduser()
    if spec.name == "sgd":
        raise ValueError("an optimizer state file holds Adam moments; set the optimizer to "
                         "adam or adamw, or the state file to null")
    if not path.is_file():
        raise FileNotFoundError(f"optimizer state file {path} not found")
    saved = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(saved, dict) or "state" not in saved or "param_groups" not in saved:
        raise ValueError(f"{path} is not a torch optimizer state_dict (keys state, param_groups)")
    ids = [i for group in saved["param_groups"] for i in group["params"]]
    if len(saved["param_groups"]) != 1 or len(ids) != len(params):
        raise ValueError(f"{path}: {len(saved['param_groups'])} parameter group(s) over "
                         f"{len(ids)} parameters; expected 1 group over the {len(params)} "
                         "trainable parameters in model.parameters() order")
    for i, p in zip(ids, params):
        state = saved["state"].get(i)
        if state is None or tuple(state["exp_avg"].shape) != tuple(p.shape):
            got = None if state is None else tuple(state["exp_avg"].shape)
            raise ValueError(f"{path}: state of parameter {i} has shape {got}, "
                             f"the model's parameter has {tuple(p.shape)}")
    return saved
