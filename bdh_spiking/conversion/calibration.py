"""Calibration: per-neuron activation statistics of the dense model on calibration text.

The spiking neurons' thresholds come from the positive values of the currents they replace:
x neurons from x E, y neurons from LN(yKV) E_v (product gating) or from the gated value
a * ReLU(LN(yKV) E_v) (gain gating, whose y neurons encode a * b directly). Only the top few
values per neuron are kept (a running top-k), so memory does not grow with the text length.
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from ..progress import bar as tqdm

from ..errors import ConfigError, TextError

MIN_CALIBRATION_BYTES = 64
MAX_KEPT_VALUES = 1 << 22  # per head: the largest order statistic a quantile may ask for


# Log-spaced histogram of positive values per neuron: 8 bins per octave over 2^-20 .. 2^12.
HIST_BINS_PER_OCTAVE = 8
HIST_LOG2_MIN = -20
HIST_BINS = 32 * HIST_BINS_PER_OCTAVE


def hist_centers(dtype=torch.float64) -> torch.Tensor:
    edges = torch.arange(HIST_BINS + 1, dtype=dtype) / HIST_BINS_PER_OCTAVE + HIST_LOG2_MIN
    return torch.pow(2.0, (edges[:-1] + edges[1:]) / 2)


@dataclasses.dataclass
class ActivationStats:
    """Per (layer, head, neuron): the largest positive values seen, how often it was active, and
    a log-spaced histogram of its positive values (for error-minimising thresholds)."""

    top: torch.Tensor  # L,H,N,k sorted descending (zeros where fewer positives were seen)
    active: torch.Tensor  # L,H,N count of tokens with a positive value
    tokens: int
    hist: torch.Tensor | None = None  # L,H,N,HIST_BINS counts
    head_top: torch.Tensor | None = None  # L,H,k_head: the largest values of all neurons of a head

    def quantile(self, q: float) -> torch.Tensor:
        """The q-quantile of the positive values' upper tail, per neuron (q=1: max).

        Uses the order statistic of all `tokens` samples (zeros included for inactive tokens),
        so q=0.999 on 8192 tokens is the 9th largest value; refuses when fewer values were kept.
        """
        return _order_statistic(self.top, order_rank(q, self.tokens), "per neuron")

    def head_quantile(self, q: float) -> torch.Tensor:
        """The q-quantile per head (L,H), its neurons pooled: N * tokens samples."""
        N = self.top.shape[2]
        return _order_statistic(self.head_top, order_rank(q, self.tokens * N), "per head")


def order_rank(q: float, samples: int) -> int:
    """0-based rank from the top of the q-quantile of `samples` values (q=1: the maximum)."""
    return 0 if q >= 1.0 else int(math.floor((1.0 - q) * samples))


def _order_statistic(top: torch.Tensor, rank: int, where: str) -> torch.Tensor:
    if rank >= top.shape[-1]:
        raise ConfigError(f"quantile needs the {rank + 1}th largest value {where}, but calibration kept only "
                          f"{top.shape[-1]}")
    return top[..., rank]


class _TopK:
    def __init__(self, k: int, k_head: int):
        self.k = k
        self.k_head = k_head
        self.top = None
        self.head_top = None
        self.active = None
        self.hist = None
        self.tokens = 0

    def update(self, values: torch.Tensor) -> None:
        """values: (B, H, T, N) currents of one layer (any sign)."""
        pos = F.relu(values).permute(1, 3, 0, 2).reshape(values.shape[1], values.shape[3], -1)  # H,N,BT
        k = min(self.k, pos.shape[-1])
        batch_top = torch.topk(pos, k, dim=-1).values
        pooled = pos.reshape(pos.shape[0], -1)
        head_top = torch.topk(pooled, min(self.k_head, pooled.shape[-1]), dim=-1).values
        active = (pos > 0).sum(-1)
        self._histogram(pos)
        if self.top is None:
            self.top, self.head_top, self.active = batch_top, head_top, active
        else:
            merged = torch.cat([self.top, batch_top], dim=-1)
            self.top = torch.topk(merged, min(self.k, merged.shape[-1]), dim=-1).values
            merged = torch.cat([self.head_top, head_top], dim=-1)
            self.head_top = torch.topk(merged, min(self.k_head, merged.shape[-1]), dim=-1).values
            self.active = self.active + active
        self.tokens += values.shape[0] * values.shape[2]

    def _histogram(self, pos: torch.Tensor) -> None:
        H, N, M = pos.shape
        if self.hist is None:
            self.hist = torch.zeros(H, N, HIST_BINS, dtype=torch.float64, device=pos.device)
        mask = pos > 0
        b = torch.floor((torch.log2(pos.clamp(min=1e-300)) - HIST_LOG2_MIN) * HIST_BINS_PER_OCTAVE)
        b = b.clamp(0, HIST_BINS - 1).to(torch.int64)
        self.hist.scatter_add_(2, b, mask.to(torch.float64))


def collect_stats(model, ids: torch.Tensor, gating: str, seq_len: int = 256, batch: int = 8,
                  top_k: int = 64, progress: bool = False, quantile: float = 1.0) -> dict:
    """Runs the dense model (float64) over ids cut into sequences; returns {'x': stats, 'y': stats}.

    Keeps at least ``top_k`` values per neuron and, per head, as many as the ``quantile`` needs
    (its order statistic of the pooled head), so no quantile is ever clamped to the kept values.
    """
    if ids.numel() < MIN_CALIBRATION_BYTES:
        raise TextError(f"calibration text has {ids.numel()} bytes; at least {MIN_CALIBRATION_BYTES} are needed")
    seq_len = min(seq_len, ids.numel())
    n_seq = ids.numel() // seq_len
    seqs = ids[: n_seq * seq_len].view(n_seq, seq_len)
    L, N, tokens = model.config.n_layer, model.config.n_neurons, n_seq * seq_len
    k = max(top_k, order_rank(quantile, tokens) + 1)
    k_head = max(k, order_rank(quantile, tokens * N) + 1)
    if k_head > MAX_KEPT_VALUES:
        raise ConfigError(f"threshold quantile {quantile} on {tokens} calibration bytes needs the {k_head}th largest "
                          f"value of each head (at most {MAX_KEPT_VALUES} are kept): use a quantile closer to 1")
    trackers = {pop: [_TopK(k, k_head) for _ in range(L)] for pop in ("x", "y")}

    def probe(layer, x, x_current, y_current):
        trackers["x"][layer].update(x_current)
        if gating == "gain":
            trackers["y"][layer].update(F.relu(x_current) * F.relu(y_current))
        else:
            trackers["y"][layer].update(y_current)

    with torch.no_grad():
        for i in tqdm(range(0, n_seq, batch), desc="calibration", disable=not progress, leave=False):
            model(seqs[i : i + batch].to(model.embed.weight.device), probe=probe)
    out = {}
    for pop, layers in trackers.items():
        k = min(t.top.shape[-1] for t in layers)
        out[pop] = ActivationStats(
            top=torch.stack([t.top[..., :k] for t in layers]).cpu(),
            active=torch.stack([t.active for t in layers]).cpu(),
            tokens=layers[0].tokens,
            hist=torch.stack([t.hist for t in layers]).cpu(),
            head_top=torch.stack([t.head_top for t in layers]).cpu(),
        )
    return out


def thresholds(stats: ActivationStats, granularity: str = "neuron", quantile: float = 1.0,
               mse_design: tuple | None = None) -> tuple:
    """Thresholds per neuron (L,H,N) and how many neurons fell back to their head's value.

    granularity: 'neuron' (own statistic; silent neurons fall back to the head's), 'head', or
    'population' (one value per layer). mse_design=(T, max_spikes): per-neuron thresholds that
    minimise the expected decoding error at that design point (granularity 'neuron' only).
    """
    per_neuron = stats.quantile(quantile)  # L,H,N
    L, H, N = per_neuron.shape
    # the head statistic treats the head's neurons as one population of N*tokens samples
    per_head = stats.head_quantile(quantile).unsqueeze(-1).expand(L, H, N)
    layer_max = per_head.amax(dim=(1, 2), keepdim=True).expand(L, H, N)
    if granularity == "population":
        theta = layer_max.clone()
    elif granularity == "head":
        theta = torch.where(per_head > 0, per_head, layer_max)
    elif granularity == "neuron":
        theta = torch.where(per_neuron > 0, per_neuron, torch.where(per_head > 0, per_head, layer_max))
    else:
        raise ValueError(f"unknown threshold granularity {granularity!r}")
    if mse_design is not None and granularity == "neuron":
        theta = mse_thresholds(stats, mse_design[0], mse_design[1], theta)
    fallback = int((per_neuron <= 0).sum()) if granularity == "neuron" else 0
    theta = torch.where(theta > 0, theta, torch.ones_like(theta))  # a layer silent everywhere
    return theta.to(torch.float64).contiguous(), fallback


def expected_error(centers: torch.Tensor, theta: torch.Tensor, timesteps: int, max_spikes: int) -> torch.Tensor:
    """Expected squared decoding error of values `centers` for thresholds `theta` (broadcast).

    With v_init = theta/2 the decoded value is round(T a / theta) theta / T: below half a step
    the value is lost (error a^2), inside the range the rounding error is uniform
    ((theta/T)^2 / 12), above the top level (max_spikes spikes every step) the value is clipped.
    """
    step = theta / timesteps
    top = max_spikes * theta
    lost = centers < step / 2
    clipped = centers > top + step / 2
    inside = step * step / 12.0
    return torch.where(lost, centers * centers, torch.where(clipped, (centers - top) ** 2, inside))


def mse_thresholds(stats: ActivationStats, design_T: int, max_spikes: int, fallback: torch.Tensor,
                   candidates: int = 64) -> torch.Tensor:
    """Per-neuron thresholds minimising the expected squared decoding error (``expected_error``
    summed over the neuron's histogram) at design_T steps, searched over max * 2^(-j/8),
    j = 0..candidates-1 (down to 1/256 of the neuron's max).

    The three regions of expected_error are sums over contiguous histogram ranges, so prefix
    sums of h, h c and h c^2 give every candidate's total in O(1).
    """
    maxima = stats.top[..., 0].to(torch.float64)  # L,H,N
    base = torch.where(maxima > 0, maxima, fallback.to(torch.float64)).reshape(-1, 1)
    thetas = base * torch.pow(2.0, -torch.arange(candidates, dtype=torch.float64) / 8)  # n,J
    centers = hist_centers()
    h = stats.hist.reshape(-1, stats.hist.shape[-1]).to(torch.float64)
    zero = torch.zeros(h.shape[0], 1, dtype=torch.float64)
    c0 = torch.cat([zero, h.cumsum(-1)], -1)
    c1 = torch.cat([zero, (h * centers).cumsum(-1)], -1)
    c2 = torch.cat([zero, (h * centers * centers).cumsum(-1)], -1)
    step = thetas / design_T
    top = max_spikes * thetas
    lo = torch.searchsorted(centers, (step / 2).contiguous())  # bins with centre < step/2: lost
    hi = torch.searchsorted(centers, (top + step / 2).contiguous(), right=True)  # bins beyond: clipped

    def upto(c, i):
        return c.gather(1, i)

    lost = upto(c2, lo)
    inside = (upto(c0, hi) - upto(c0, lo)) * step * step / 12.0
    n_clip = c0[:, -1:] - upto(c0, hi)
    s1_clip = c1[:, -1:] - upto(c1, hi)
    s2_clip = c2[:, -1:] - upto(c2, hi)
    clipped = s2_clip - 2 * top * s1_clip + top * top * n_clip
    total = lost + inside + clipped
    best = thetas.gather(1, total.argmin(1, keepdim=True)).view_as(maxima)
    return torch.where(maxima > 0, best, fallback.to(torch.float64))
