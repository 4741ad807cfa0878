"""Sampling bytes from the spiking network itself (reference executor, token by token)."""

from __future__ import annotations

import torch

from .backends import simulate
from .model import sample_next
from .text import decode, to_ids


def generate(net, prompt: str, n_bytes: int, timesteps: int = 8, coding: str = "rate", max_spikes: int = 4,
             device="cpu", seed: int = 0, temperature: float = 1.0, top_k: int | None = 3) -> str:
    """Prompt + n_bytes sampled from the spiking network's logits (same seed -> same text).

    Each new byte re-runs the sequence so far: simple and exact (the network is causal), with cost
    growing with the length; fine for the short samples this is meant for.
    """
    gen = torch.Generator().manual_seed(seed)
    ids = to_ids(prompt.encode("utf-8") or b"\n")
    for _ in range(n_bytes):
        out = simulate(net, ids[None], timesteps=timesteps, coding=coding, max_spikes=max_spikes, device=device)
        nxt = sample_next(out.logits[:, -1].cpu(), temperature, top_k, gen)
        ids = torch.cat([ids, nxt])
    return decode(ids)
