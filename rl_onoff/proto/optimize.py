"""Optimising proto-token vectors for a batch of targets against a frozen model.

The vectors live in fp32 whatever the model's dtype (an AdamW step of 0.01 on a
bf16 value near 1 would mostly round away); `method.build_inputs` casts them
when it builds the inputs. The batch loss is the SUM of per-text mean
cross-entropies and each text's gradient is clipped on its own (when clipping
is on; Kuratov et al. do not clip, nor do we by default), so a text's trajectory
does not depend on which other texts share its batch (a shared m couples them by
design). A text leaves the batch when its accuracy reaches 100%, or on a
plateau: `patience` steps without a higher accuracy or a loss lower by more than
`min_delta` (Kuratov et al.: a 5,000-step cap, patience 2,000). Every text keeps
the parameters of its best step (accuracy, then loss), not the last. With a
shared m the texts succeed or fail together: the best step is the one with the
best mean accuracy and the run stops when all are exact or the joint score
plateaus. A non-finite loss stops the run with a message (no NaN is ever kept).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np
import torch

from rl_onoff.proto.method import forward, pad_targets, row_stats, uses_m
from rl_onoff.stage import StageError

CURVES = ("loss", "accuracy", "top5", "grad_norm", "e_norm", "m_norm")


@dataclass(frozen=True)
class Settings:
    method: str = "one_step"
    arrangement: str = "e_m"
    share_m: bool = False
    steps: int = 5000
    patience: int | None = 2000
    min_delta: float = 1e-4
    lr: float = 0.01
    betas: tuple = (0.9, 0.9)
    weight_decay: float = 0.01
    lr_schedule: str = "constant"
    max_grad_norm: float | None = None
    init: str = "embedding"
    bos: int | None = None      # [mem]'s BOS after the memory vector (None: the tokenizer has none)

    @classmethod
    def from_config(cls, cfg, bos: int | None = None) -> Settings:
        return cls(**{k: getattr(cfg, k) for k in cls.__dataclass_fields__
                      if k not in ("betas", "bos")}, betas=tuple(cfg.betas), bos=bos)

    @property
    def with_m(self) -> bool:
        return uses_m(self.method, self.arrangement)


@dataclass
class Result:
    e: torch.Tensor             # best e per text (texts x d, fp32, CPU)
    m: torch.Tensor | None      # best m: texts x d, 1 x d (shared), None (mem, e_only)
    best_accuracy: np.ndarray   # training-time accuracy of the kept parameters
    best_step: np.ndarray       # the step (0-based) they come from
    steps_run: np.ndarray       # steps each text was optimised for
    stopped: list               # per text why it stopped: exact | plateau | cap
    curves: dict                # name -> (steps x texts) array, NaN after a text stopped
    lr: np.ndarray              # learning rate per step
    grad_norm_shared_m: np.ndarray | None


def embedding_norm(model) -> float:
    """Mean L2 norm of the model's input embedding rows: the scale e and m are compared to."""
    return model.get_input_embeddings().weight.float().norm(dim=1).mean().item()


def init_std(model, init: str) -> float:
    """normal: N(0, 1); embedding: the embedding matrix's std; small: N(0, 0.01^2)."""
    if init == "normal":
        return 1.0
    if init == "embedding":
        return model.get_input_embeddings().weight.float().std().item()
    if init == "small":
        return 0.01
    raise ValueError(f"init {init!r}; allowed: normal, embedding, small")


def seeded_normal(size: int, std: float, *key) -> torch.Tensor:
    """A fp32 N(0, std^2) vector that depends only on `key` (seed, restart, text), so a text
    starts from the same point in any batch."""
    seed = int(hashlib.sha256(repr(key).encode()).hexdigest()[:15], 16)
    return torch.randn(size, generator=torch.Generator().manual_seed(seed)) * std


def initial_vectors(model, settings: Settings, text_ids: list, seed: int,
                    restart: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(e, m) for the texts `text_ids` (their positions in the whole run, or any hashable
    key such as (text, length)) under one restart: independent draws per key."""
    d = model.get_input_embeddings().weight.shape[1]
    std = init_std(model, settings.init)
    e = torch.stack([seeded_normal(d, std, seed, restart, "e", t) for t in text_ids])
    if not settings.with_m:
        return e, None
    if settings.share_m:
        return e, seeded_normal(d, std, seed, restart, "m")[None]
    return e, torch.stack([seeded_normal(d, std, seed, restart, "m", t) for t in text_ids])


def _schedule(settings: Settings):
    if settings.lr_schedule == "cosine":
        return lambda step: 0.5 * (1 + math.cos(math.pi * step / settings.steps))
    return lambda step: 1.0


def optimise(model, targets: list[list[int]], e0: torch.Tensor, m0: torch.Tensor | None,
             settings: Settings, log=None, log_every: int = 10, bar=None,
             train_m: bool = True) -> Result:
    """Fit e (and m, unless `train_m` is false: m then stays as given) so the frozen `model`
    emits each target; `log(step, metrics)` every `log_every` steps; `bar` (tqdm) advances
    by one per step."""
    device = next(model.parameters()).device
    ids, mask = pad_targets(targets, device)
    lengths = mask.sum(1)
    rows_total, steps = len(targets), settings.steps
    e = e0.detach().clone().to(device).requires_grad_()
    m = None if m0 is None else m0.detach().clone().to(device).requires_grad_(train_m)
    optimiser = torch.optim.AdamW([p for p in (e, m) if p is not None and p.requires_grad],
                                  lr=settings.lr,
                                  betas=settings.betas, weight_decay=settings.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimiser, _schedule(settings))
    emb_norm = embedding_norm(model)

    active = torch.ones(rows_total, dtype=torch.bool, device=device)
    best_e, best_m = e.detach().clone(), None if m is None else m.detach().clone()
    best_acc = np.full(rows_total, -1.0)
    best_loss = np.full(rows_total, np.inf)
    best_step = np.zeros(rows_total, dtype=np.int64)
    plateau_loss = np.full(rows_total, np.inf)   # the loss at the last real improvement
    waited = np.zeros(rows_total, dtype=np.int64)
    stopped = ["cap"] * rows_total
    steps_run = np.zeros(rows_total, dtype=np.int64)
    curves = {name: np.full((steps, rows_total), np.nan) for name in CURVES}
    last = {"loss": np.zeros(rows_total), "accuracy": np.zeros(rows_total),
            "top5": np.zeros(rows_total), "correct": np.zeros(rows_total)}
    lrs, grad_m = np.zeros(steps), np.full(steps, np.nan) if settings.share_m else None

    step, joint_best = 0, (-1.0, -np.inf)
    for step in range(steps):
        rows = active.nonzero().squeeze(1)
        width = int(lengths[rows].max())
        row_m = None if m is None else (m if settings.share_m else m[rows])
        stats = row_stats(forward(model, e[rows], row_m, ids[rows, :width], settings.method,
                                  settings.arrangement, settings.bos),
                          ids[rows, :width], mask[rows, :width])
        idx = rows.cpu().numpy()
        loss = stats["loss"].detach().cpu().numpy()
        acc = stats["accuracy"].cpu().numpy()
        if not np.isfinite(loss).all():
            bad = idx[~np.isfinite(loss)].tolist()
            raise StageError(f"04_proto: the loss became {loss[~np.isfinite(loss)][0]} at step "
                             f"{step} for text(s) {bad} of this batch; lower `04_proto.lr`, set "
                             "`04_proto.max_grad_norm` (e.g. 1.0) or run the model in float32")
        for name, value in (("loss", loss), ("accuracy", acc),
                            ("top5", stats["top5"].cpu().numpy()),
                            ("correct", stats["correct"].cpu().numpy())):
            last[name][idx] = value
        curves["loss"][step, idx], curves["accuracy"][step, idx] = loss, acc
        curves["top5"][step, idx] = last["top5"][idx]
        curves["e_norm"][step, idx] = e[rows].detach().norm(dim=1).cpu().numpy()
        if m is not None:
            curves["m_norm"][step, idx] = row_m.detach().norm(dim=-1).expand(len(idx)).cpu().numpy()
        lrs[step] = scheduler.get_last_lr()[0]
        steps_run[idx] = step + 1

        with torch.no_grad():
            if settings.share_m:     # one joint best: the vectors only work together
                score = (acc.mean(), -loss.mean())
                if _improved(acc.mean(), loss.mean(), joint_best[0], plateau_loss[0],
                             settings.min_delta):
                    plateau_loss[:], waited[:] = loss.mean(), 0
                else:
                    waited += 1
                if score > joint_best:
                    joint_best = score
                    best_acc[:], best_loss[:], best_step[:] = acc, loss, step
                    best_e.copy_(e)
                    best_m.copy_(m)
                done = "exact" if (acc == 1.0).all() else "plateau" if _out_of_patience(
                    waited[0], settings) else None
                finished = done is not None
                if finished:
                    stopped = [done] * rows_total
            else:
                real = _improved(acc, loss, best_acc[idx], plateau_loss[idx], settings.min_delta)
                plateau_loss[idx[real]], waited[idx[real]] = loss[real], 0
                waited[idx[~real]] += 1
                better = (acc > best_acc[idx]) | ((acc == best_acc[idx]) & (loss < best_loss[idx]))
                keep = idx[better]
                best_acc[keep], best_loss[keep], best_step[keep] = acc[better], loss[better], step
                best_e[keep] = e[keep]
                if m is not None:
                    best_m[keep] = m[keep]
                for i, row in enumerate(idx):
                    if acc[i] == 1.0 or _out_of_patience(waited[row], settings):
                        stopped[row] = "exact" if acc[i] == 1.0 else "plateau"
                        active[rows[i]] = False
                finished = not bool(active.any())

        if not finished:
            optimiser.zero_grad(set_to_none=False)
            stats["loss"].sum().backward()
            norms = _clip_per_text(e, m if train_m and not settings.share_m else None, rows,
                                   settings.max_grad_norm)
            curves["grad_norm"][step, idx] = norms
            if settings.share_m and train_m:
                grad_m[step] = m.grad.norm().item()
                if settings.max_grad_norm is not None:
                    torch.nn.utils.clip_grad_norm_([m], settings.max_grad_norm)
            optimiser.step()
            scheduler.step()

        if log is not None and (step % log_every == 0 or finished or step == steps - 1):
            log(step, {"loss": last["loss"].mean(), "accuracy": last["accuracy"].mean(),
                       "top5_accuracy": last["top5"].mean(),
                       "correct_tokens": int(last["correct"].sum()),
                       "best_accuracy": best_acc.mean(), "solved": int((best_acc == 1.0).sum()),
                       "active": len(idx), "lr": lrs[step],
                       "e_norm": float(np.nanmean(curves["e_norm"][step])),
                       "m_norm": float(np.nanmean(curves["m_norm"][step])) if m is not None
                       else None, "embedding_norm": emb_norm,
                       "grad_norm": float(np.nanmean(curves["grad_norm"][step]))
                       if not finished else None})
        if bar is not None:
            bar.update(1)
        if finished:
            break
    if bar is not None:
        bar.update(steps - 1 - step)
    used = step + 1
    return Result(e=best_e.cpu(), m=None if best_m is None else best_m.cpu(),
                  best_accuracy=best_acc, best_step=best_step, steps_run=steps_run,
                  stopped=stopped,
                  curves={k: v[:used] for k, v in curves.items()}, lr=lrs[:used],
                  grad_norm_shared_m=None if grad_m is None else grad_m[:used])


def _improved(acc, loss, best_acc, plateau_loss, min_delta: float):
    """A real improvement: a higher accuracy than the best so far, or a loss more than
    `min_delta` below the loss of the last real improvement."""
    return (acc > best_acc) | (loss < plateau_loss - min_delta)


def _out_of_patience(waited: int, settings: Settings) -> bool:
    return settings.patience is not None and waited >= settings.patience


def _clip_per_text(e: torch.Tensor, m: torch.Tensor | None, rows: torch.Tensor,
                   max_norm: float | None) -> np.ndarray:
    """Each text's gradient norm over its own e (and m) rows, before clipping; clip in place."""
    with torch.no_grad():
        squared = e.grad[rows].pow(2).sum(1)
        if m is not None:
            squared = squared + m.grad[rows].pow(2).sum(1)
        norms = squared.sqrt()
        if max_norm is not None:
            scale = (max_norm / (norms + 1e-6)).clamp(max=1.0)
            e.grad[rows] *= scale[:, None]
            if m is not None:
                m.grad[rows] *= scale[:, None]
    return norms.cpu().numpy()
