"""The sampling distribution, written once for every stage that samples.

00-sample draws tokens from it, 01-dist measures its entropy and log-probs,
03-tree-search expands nodes with it. The transforms run in this order:
temperature, top-k, top-p, min-p (the order Hugging Face's warpers use);
temperature 0 is greedy. Each filter keeps the tokens whose logit reaches a
per-row threshold, so the distribution is softmax(logits / T) over
{logits >= threshold}:

  top-k  the k-th largest logit (tokens tied with it are kept);
  top-p  over the top-k survivors at temperature T, a token is kept when the
         tokens strictly more likely than it hold less than top_p of the mass
         (ties are kept or dropped together; the most likely token always stays);
  min-p  log(min_p) * T below the largest logit (probability >= min_p x the largest).

No filter sorts the vocabulary. The threshold is read off the largest logits
(NUCLEUS_BLOCK of them) when the kept set ends among them, as it does for most
tokens of a trained model; otherwise a histogram of the probabilities over
their float bits finds the one bin where top-p's mass crosses, and only that
bin is sorted. All of it is exact: no probability is approximated.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

# Sorting blocks for top_k_of; the first look at the largest logits for the filters.
TOPK_BLOCK = 64
NUCLEUS_BLOCK = 64
# Histogram bins of an fp32 probability in (0, 1]: its bits >> 16 (exponent and 7 mantissa
# bits), in the order of the probabilities; bin 0x3F80 holds 1.0, the largest.
MASS_SHIFT = 16
MASS_BINS = (0x3F800000 >> MASS_SHIFT) + 1
NEG_INF = float("-inf")
LOG2E = 1 / math.log(2)


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 1.0   # 0: greedy
    top_p: float = 1.0         # 1: off
    top_k: int = 0             # 0: off
    min_p: float = 0.0         # 0: off

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    @property
    def filters(self) -> bool:
        """Whether any of top-k, top-p, min-p is on."""
        return self.top_k > 0 or self.top_p < 1.0 or self.min_p > 0

    def to_dict(self) -> dict:
        return asdict(self)


def sampling_logits(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """Logits (fp32) of the distribution actually sampled from; -inf where filtered out.

    Greedy gives a point mass on the argmax (0 there, -inf elsewhere).
    """
    logits = logits.float()
    if params.greedy:
        out = torch.full_like(logits, NEG_INF)
        return out.scatter_(-1, logits.argmax(-1, keepdim=True), 0.0)
    scaled = logits / params.temperature if params.temperature != 1.0 else logits
    if not params.filters:
        return scaled
    shifted = logits - logits.amax(-1, keepdim=True)
    threshold = keep_threshold(shifted, params)
    return torch.where(shifted >= threshold, scaled, NEG_INF)


def sample_next(logits: torch.Tensor, params: SamplingParams,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """One token per row of `logits` (batch, vocab)."""
    if params.greedy:
        return logits.argmax(-1)
    probs = sampling_logits(logits, params).softmax(-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def scaled_exp(values: torch.Tensor, temperature: float,
               out: torch.Tensor | None = None) -> torch.Tensor:
    """exp(values / T), computed as exp2(values * log2(e) / T): as accurate as exp (relative
    error under 4e-7 against float64 for both) and 1.4x (T = 1) to 1.8x faster on a CPU, where
    it is the costliest pass over the vocabulary. Every mass the filters compare uses it."""
    return torch.mul(values, LOG2E / temperature, out=out).exp2_()


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy in nats of softmax(logits) along the last axis, in fp32; -inf entries allowed."""
    logits = logits.float()
    logp = logits.log_softmax(-1)
    p = logp.exp()
    return -(p * logp.masked_fill(p == 0, 0.0)).sum(-1)


def top_k_of(logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """torch.topk over the vocabulary, in two small steps: the k largest logits lie in the k
    blocks (of TOPK_BLOCK logits) with the largest maxima, since a logit outside those blocks
    has k block maxima at or above it. Several times faster than one topk over 150k entries
    on a CPU; ties may come out in another order."""
    rows, vocab = logits.shape
    blocks = vocab // TOPK_BLOCK
    if blocks <= k:
        return logits.topk(k, -1)
    head = logits[:, :blocks * TOPK_BLOCK].view(rows, blocks, TOPK_BLOCK)
    best = head.amax(-1).topk(k, -1).indices
    offsets = torch.arange(TOPK_BLOCK, device=logits.device)
    tail = torch.arange(blocks * TOPK_BLOCK, vocab, device=logits.device).expand(rows, -1)
    ids = torch.cat([(best[..., None] * TOPK_BLOCK + offsets).flatten(1), tail], 1)
    values, where = logits.gather(1, ids).topk(k, -1)
    return values, ids.gather(1, where)


def block_width(params: SamplingParams, vocab: int) -> int:
    """How many of the largest logits the filters look at first: past top_k, so that the
    block shows whether the top-k set ends inside it."""
    return min(vocab, max(NUCLEUS_BLOCK, params.top_k + 1))


def keep_threshold(shifted: torch.Tensor, params: SamplingParams,
                   top: torch.Tensor | None = None) -> torch.Tensor:
    """Per row of `shifted` (rows, vocab: fp32 logits minus their row maximum), the smallest
    value the filters keep, (rows, 1); -inf where they keep everything. `top`: the rows'
    largest values in descending order, at least block_width of them (computed if None)."""
    if top is None:
        top = top_k_of(shifted, block_width(params, shifted.shape[1]))[0]
    return _filter(shifted, params, top, None)[0]


def _filter(shifted, params, top, buffers) -> tuple[torch.Tensor, torch.Tensor | None, bool]:
    """(keep_threshold; exp(shifted / T) over the top-k set when top-p needed the whole rows
    for its total, else None; whether those are already 0 below keep_threshold).
    `buffers`: None, or an fp32 and an int32 buffer the size of `shifted` for the
    probabilities and their histogram bins."""
    rows, vocab = shifted.shape
    threshold = shifted.new_full((rows, 1), NEG_INF)
    if 0 < params.top_k < vocab:
        threshold = top[:, params.top_k - 1:params.top_k]
    probs, masked = None, False
    if params.top_p < 1.0:
        temperature, top_p = params.temperature, params.top_p
        block_mass = torch.where(top >= threshold, scaled_exp(top, temperature), 0.0)
        inside = _ends_inside(top, threshold, vocab)
        if bool(inside.all()):
            total = block_mass.sum(-1, keepdim=True)
        else:
            probs = _row_probs(shifted, temperature, threshold,
                               None if buffers is None else buffers[0])
            total = probs.sum(-1, keepdim=True)
        kept = (_mass_above(block_mass, top) < top_p * total).sum(-1, keepdim=True)
        nucleus = top.gather(1, kept - 1)
        # the block settles the rows where it drops a token, or where it holds the whole top-k set
        open_rows = ((kept == top.shape[1])[:, 0] & ~inside).nonzero()[:, 0]
        if len(open_rows) == rows:
            nucleus = _histogram_threshold(shifted, probs, top_p * total,
                                           None if buffers is None else buffers[1],
                                           zero_below=True)
            masked = True
        elif len(open_rows):
            nucleus[open_rows] = _histogram_threshold(shifted[open_rows], probs[open_rows],
                                                      top_p * total[open_rows], None)
        threshold = torch.maximum(threshold, nucleus)
    if params.min_p > 0:
        floor = params.temperature * math.log(params.min_p)
        masked = masked and bool((threshold >= floor).all())
        threshold = threshold.clamp(min=floor)
    return threshold, probs, masked


def _ends_inside(top: torch.Tensor, threshold: torch.Tensor, vocab: int) -> torch.Tensor:
    """(rows,): whether every value >= threshold lies in the block `top`."""
    if top.shape[1] == vocab:
        return torch.ones(len(top), dtype=torch.bool, device=top.device)
    return top[:, -1] < threshold[:, 0]


def _row_probs(shifted, temperature, threshold, out) -> torch.Tensor:
    """exp(shifted / T) over the whole rows, 0 below `threshold`; into `out` if given."""
    if not bool(threshold.isfinite().any()):
        return scaled_exp(shifted, temperature, out)
    if out is None:
        out = torch.empty_like(shifted)
    _zero_below(out, shifted, threshold, NEG_INF)
    return scaled_exp(out, temperature, out)


def _zero_below(out, values, threshold, fill: float) -> None:
    """out = values, with `fill` where values < threshold (rows, 1); `out` may be `values`.
    One row at a time with torch.threshold (a value > the float just below the threshold is
    one >= it): several times cheaper than a comparison mask and a where on a CPU."""
    below = torch.nextafter(threshold[:, 0], threshold.new_tensor(NEG_INF))
    for row, limit in enumerate(below.tolist()):
        torch.threshold(values[row], limit, fill, out=out[row])


def _mass_above(mass: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """For values sorted descending per row and their masses: the mass of strictly larger
    values (tied values share the mass above their group)."""
    before = torch.cat([torch.zeros_like(mass[:, :1]), mass.cumsum(-1)[:, :-1]], 1)
    position = torch.arange(values.shape[1], device=values.device).expand_as(values)
    new_value = torch.ones_like(values, dtype=torch.bool)
    new_value[:, 1:] = values[:, 1:] != values[:, :-1]
    group_start = torch.where(new_value, position, 0).cummax(-1).values
    return before.gather(1, group_start)


def _histogram_threshold(shifted, probs, target, bins_out, zero_below=False) -> torch.Tensor:
    """top-p's threshold (rows, 1) where the nucleus is large: the mass per bin of the
    probabilities' float bits locates the bin where the mass from the top reaches `target`
    (rows, 1); only that bin's values are sorted (all rows' members in one sort).
    `zero_below`: also set `probs` to 0 where `shifted` is below the threshold, in place."""
    bins = torch.bitwise_right_shift(probs.view(torch.int32), MASS_SHIFT, out=bins_out)
    hist = torch.zeros((len(probs), MASS_BINS), device=probs.device).scatter_add_(1, bins, probs)
    at_or_above = hist.flip(-1).cumsum(-1).flip(-1)
    target = torch.minimum(target, at_or_above[:, :1])  # rounding: the total reaches it
    crossing = (at_or_above >= target).sum(-1, keepdim=True) - 1  # the lowest such bin
    above = torch.cat([at_or_above[:, 1:], torch.zeros_like(at_or_above[:, :1])], 1)
    above = above.gather(1, crossing)[:, 0].double()
    rows, members = _where_true(bins, crossing.int())
    values = shifted[rows, members]
    # members in row order, each row's by value descending (two stable sorts)
    order = values.sort(descending=True, stable=True).indices
    order = order[rows[order].sort(stable=True).indices]
    rows, values = rows[order], values[order]
    mass = probs[rows, members[order]].double()
    counts = torch.bincount(rows, minlength=len(probs))
    first = counts.cumsum(0) - counts  # each row's first position
    before = mass.cumsum(0) - mass  # float64: the sums run across rows
    new_group = torch.ones_like(rows, dtype=torch.bool)
    new_group[1:] = (values[1:] != values[:-1]) | (rows[1:] != rows[:-1])
    position = torch.arange(len(rows), device=rows.device)
    group_start = torch.where(new_group, position, 0).cummax(0).values
    mass_above = above[rows] + before[group_start] - before[first[rows]]
    kept = torch.bincount(rows[mass_above < target[rows, 0]], minlength=len(probs))
    last = first + kept - 1
    threshold = values[last][:, None]
    if zero_below:
        # probabilities rise with the logits, so every token below the threshold has a
        # probability at most the threshold token's: zero those strictly below it, then the
        # crossing bin's members below the threshold (ties in probability included)
        members = members[order]
        _zero_below(probs, probs, probs[torch.arange(len(probs)), members[last]][:, None], 0.0)
        dropped = values < threshold[rows, 0]
        probs[rows[dropped], members[dropped]] = 0.0
    return threshold


def _where_true(bins: torch.Tensor, wanted: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, columns) where bins == wanted (rows, 1), for few matches per row: the equality
    flags, viewed 8 to an int64 word, show which blocks of 64 hold a match, and only those
    blocks are searched (a nonzero over the whole mask costs several passes)."""
    rows, vocab = bins.shape
    flags = bins == wanted
    if vocab % TOPK_BLOCK:
        flags = torch.cat([flags, flags.new_zeros((rows, TOPK_BLOCK - vocab % TOPK_BLOCK))], 1)
    blocks = flags.view(torch.int64).view(rows, -1, TOPK_BLOCK // 8).amax(-1).nonzero()
    hits = flags.view(rows, -1, TOPK_BLOCK)[blocks[:, 0], blocks[:, 1]].nonzero()
    return blocks[hits[:, 0], 0], blocks[hits[:, 0], 1] * TOPK_BLOCK + hits[:, 1]


def sampled_stats(shifted: torch.Tensor, targets: torch.Tensor, params: SamplingParams,
                  top: torch.Tensor | None = None, buffers: torch.Tensor | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """(entropy in nats, log-probability of `targets`) under the distribution `params`
    samples from, per row of `shifted` (fp32 logits minus their row maximum; left intact).
    -inf log-probability where the filters drop the target. `top`: as for keep_threshold
    (used only when a filter is on); `buffers`: fp32, (2, at least the size of `shifted`),
    reused."""
    rows, vocab = shifted.shape
    target_value = shifted.gather(1, targets[:, None])[:, 0]
    if params.greedy:  # the first argmax, as sample_next takes it
        drawn = shifted.argmax(-1) == targets
        return (torch.zeros(rows, device=shifted.device),
                torch.where(drawn, 0.0, NEG_INF))
    temperature = params.temperature
    if buffers is not None:
        size = rows * vocab
        buffers = (buffers[0].view(-1)[:size].view(rows, vocab),
                   buffers[1].view(-1)[:size].view(torch.int32).view(rows, vocab))
    if params.filters:
        if top is None or top.shape[1] < block_width(params, vocab):
            top = top_k_of(shifted, block_width(params, vocab))[0]
        threshold, probs, masked = _filter(shifted, params, top, buffers)
        inside = _ends_inside(top, threshold, vocab)
    else:  # every token kept: the whole rows, no block of the largest logits needed
        threshold, probs, masked = shifted.new_full((rows, 1), NEG_INF), None, False
        inside = torch.zeros(rows, dtype=torch.bool, device=shifted.device)
    log_total = torch.empty(rows, device=shifted.device)
    mean_scaled = torch.empty(rows, device=shifted.device)
    if bool(inside.any()):
        block = top[inside]
        mass = torch.where(block >= threshold[inside], scaled_exp(block, temperature), 0.0)
        total = mass.sum(-1)
        log_total[inside] = total.log()
        mean_scaled[inside] = (mass * (block / temperature)).sum(-1) / total
    if not bool(inside.all()):
        rest = (~inside).nonzero()[:, 0]
        part, limit = ((shifted, threshold) if len(rest) == rows
                       else (shifted[rest], threshold[rest]))
        if probs is None:
            probs = _row_probs(part, temperature, limit,
                               None if buffers is None else buffers[0])
        else:
            if len(rest) < rows:
                probs = probs[rest]
            if not masked and bool(limit.isfinite().any()):
                probs = probs.where(part >= limit, 0.0)
        total = probs.sum(-1)
        dot = torch.linalg.vecdot(probs, part) / temperature
        log_total[rest], mean_scaled[rest] = total.log(), dot / total
    entropy = log_total - mean_scaled
    logprob = torch.where(target_value >= threshold[:, 0],
                          target_value / temperature - log_total, NEG_INF)
    return entropy, logprob
