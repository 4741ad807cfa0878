"""Running the model once per network (dense, spiking) and keeping what the analyses need."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from ..semantics import layer_norm
from .settings import StudySettings


def residual_inputs(ids: torch.Tensor, gated: torch.Tensor, w: dict) -> torch.Tensor:
    """Each layer's residual input x^l (B,T,L,D), rebuilt from the gated values g (B,T,L,H,N):
    x^0 = LN(embed), x^{l+1} = LN(x^l + LN(g^l Dec)) (the decoder stage of every executor)."""
    batch, n_tokens, n_layers = gated.shape[:3]
    x = layer_norm(w["embed"][ids])
    xs = []
    for layer in range(n_layers):
        xs.append(x)
        m = gated[:, :, layer].reshape(batch, n_tokens, -1).to(w["decoder"].dtype) @ w["decoder"]
        x = layer_norm(x + layer_norm(m))
    return torch.stack(xs, 2)


@dataclasses.dataclass
class Activity:
    """What the analyses need from one run, tokens flattened (window-major)."""

    name: str
    x_activity: np.ndarray  # (n_tokens, L, H, N) float32 decoded x activity (a)
    gated: np.ndarray  # (n_tokens, L, H, N) float32 gated values (g)
    xres: np.ndarray  # (n_tokens, L, D) float32 residual input per layer
    x_counts: np.ndarray | None = None  # spiking runs only
    y_counts: np.ndarray | None = None
    logits: torch.Tensor | None = None


def _flat(t: torch.Tensor) -> np.ndarray:
    """(B, T, ...) -> (B*T, ...) float32."""
    return t.reshape(-1, *t.shape[2:]).float().numpy()


def dense_activity(model, ids, w) -> Activity:
    from ..report import dense_reference

    d = dense_reference(model, ids, chunk=ids.shape[1])
    xres = residual_inputs(ids, d.g, w)
    return Activity("dense", _flat(d.a), _flat(d.g), _flat(xres), logits=d.logits)


def spiking_activity(net, ids, w, settings: StudySettings, backend="reference", mode="discrete",
                     name="spiking") -> Activity:
    from ..backends import simulate

    r = simulate(net, ids, backend=backend, timesteps=settings.timesteps, coding="multispike", mode=mode,
                 max_spikes=settings.max_spikes, record=("counts", "decoded"), progress=True,
                 **({"chunk": ids.shape[1]} if backend == "reference" else {}))
    rec = r.records
    xres = residual_inputs(ids, rec["g_hat"], w)
    return Activity(name, _flat(rec["a_hat"]), _flat(rec["g_hat"]), _flat(xres), _flat(rec["x_counts"]),
                    _flat(rec["y_counts"]), logits=r.logits.double())
