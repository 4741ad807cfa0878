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
from tqdm.auto import tqdm

from ..errors import TextError

MIN_CALIBRATION_BYTES = 64


@dataclasses.dataclass
class ActivationStats:
    """Per (layer, head, neuron): the largest positive values seen, and how often it was active."""

    top: torch.Tensor  # L,H,N,k sorted descending (zeros where fewer positives were seen)
    active: torch.Tensor  # L,H,N count of tokens with a positive value
    tokens: int

    def quantile(self, q: float) -> torch.Tensor:
        """The q-quantile of the positive values' upper tail, per neuron (q=1: max).

        Uses the order statistic of all `tokens` samples (zeros included for inactive tokens),
        so q=0.999 on 8192 tokens is the 9th largest value; needs k >= that rank.
        """
        if q >= 1.0:
            return self.top[..., 0]
        rank = int(math.floor((1.0 - q) * self.tokens))
        rank = min(rank, self.top.shape[-1] - 1)
        return self.top[..., rank]


class _TopK:
    def __init__(self, k: int):
        self.k = k
        self.top = None
        self.active = None
        self.tokens = 0

    def update(self, values: torch.Tensor) -> None:
        """values: (B, H, T, N) currents of one layer (any sign)."""
        pos = F.relu(values).permute(1, 3, 0, 2).reshape(values.shape[1], values.shape[3], -1)  # H,N,BT
        k = min(self.k, pos.shape[-1])
        batch_top = torch.topk(pos, k, dim=-1).values
        active = (pos > 0).sum(-1)
        if self.top is None:
            self.top, self.active = batch_top, active
        else:
            merged = torch.cat([self.top, batch_top], dim=-1)
            self.top = torch.topk(merged, min(self.k, merged.shape[-1]), dim=-1).values
            self.active = self.active + active
        self.tokens += values.shape[0] * values.shape[2]


def collect_stats(model, ids: torch.Tensor, gating: str, seq_len: int = 256, batch: int = 8,
                  top_k: int = 64, progress: bool = False) -> dict:
    """Runs the dense model (float64) over ids cut into sequences; returns {'x': stats, 'y': stats}."""
    if ids.numel() < MIN_CALIBRATION_BYTES:
        raise TextError(f"calibration text has {ids.numel()} bytes; at least {MIN_CALIBRATION_BYTES} are needed")
    seq_len = min(seq_len, ids.numel())
    n_seq = ids.numel() // seq_len
    seqs = ids[: n_seq * seq_len].view(n_seq, seq_len)
    L = model.config.n_layer
    trackers = {"x": [_TopK(top_k) for _ in range(L)], "y": [_TopK(top_k) for _ in range(L)]}

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
        )
    return out


def thresholds(stats: ActivationStats, granularity: str = "neuron", quantile: float = 1.0) -> tuple:
    """Thresholds per neuron (L,H,N) and how many neurons fell back to their head's value.

    granularity: 'neuron' (own statistic; silent neurons fall back to the head's), 'head', or
    'population' (one value per layer).
    """
    per_neuron = stats.quantile(quantile)  # L,H,N
    L, H, N = per_neuron.shape
    flat = stats.top.reshape(L, H, N * stats.top.shape[-1])
    # the head statistic treats the head's neurons as one population of N*tokens samples
    head_stats = ActivationStats(top=torch.topk(flat, min(flat.shape[-1], stats.top.shape[-1]), dim=-1).values
                                 .unsqueeze(2), active=stats.active.sum(-1, keepdim=True), tokens=stats.tokens * N)
    per_head = head_stats.quantile(quantile).expand(L, H, N)
    layer_max = per_head.amax(dim=(1, 2), keepdim=True).expand(L, H, N)
    if granularity == "population":
        theta = layer_max.clone()
    elif granularity == "head":
        theta = torch.where(per_head > 0, per_head, layer_max)
    elif granularity == "neuron":
        theta = torch.where(per_neuron > 0, per_neuron, torch.where(per_head > 0, per_head, layer_max))
    else:
        raise ValueError(f"unknown threshold granularity {granularity!r}")
    fallback = int((per_neuron <= 0).sum()) if granularity == "neuron" else 0
    theta = torch.where(theta > 0, theta, torch.ones_like(theta))  # a layer silent everywhere
    return theta.to(torch.float64).contiguous(), fallback
