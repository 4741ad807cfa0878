"""Sampling bytes from the spiking network itself (the reference executor, token by token)."""

from __future__ import annotations

import torch

from .backends.reference import ReferenceExecutor
from .model import sample_next
from .semantics import SimSettings
from .text import decode, to_ids


@torch.no_grad()
def generate(net, prompt: str, n_bytes: int, timesteps: int = 8, coding: str = "multispike", max_spikes: int = 4,
             device="cpu", seed: int = 0, temperature: float = 1.0, top_k: int | None = 3) -> str:
    """Prompt + n_bytes sampled from the spiking network's logits (same seed -> same text).

    The executor's normative token-by-token form carries the plastic synapses from byte to byte,
    so each new byte costs one token of simulation.
    """
    settings = SimSettings(timesteps=timesteps, coding=coding, max_spikes=max_spikes).validate()
    ex = ReferenceExecutor(net, settings, device)
    gen = torch.Generator().manual_seed(seed)
    ids = to_ids(prompt.encode("utf-8") or b"\n")
    S = ex.initial_state(1)
    for t in range(len(ids)):
        logits = ex.step(ids[t : t + 1], t, S)
    out = list(ids.tolist())
    for t in range(len(ids), len(ids) + n_bytes):
        nxt = sample_next(logits.cpu(), temperature, top_k, gen)
        out.append(int(nxt))
        logits = ex.step(nxt.to(ex.device), t, S)
    return decode(out)
