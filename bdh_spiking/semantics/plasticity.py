"""The Hebbian plastic synapses x -> residual: the rule, its switches, its two executable forms.

Fixed-frame oscillator form (docs/spiking-semantics.md): for token t of a layer, with x the
layer's residual input and q = R_t a the rotated x payload,

    switches:  S = 0 if t resets, else S *= exp(-1/tau) if decaying and t > 0
    read:      u = S q                      (before the write: strictly causal)
    write:     S += x ⊗ q                   (unless writes are frozen at t)
    perturb:   S += noise * rms(x) rms(q) * eps, eps ~ N(0, 1) per synapse (if noise is set);
               lesioned synapses are held at 0 (if a lesion is set)

The two perturbations (``perturb_step``) are experimental manipulations for the working-memory
study; only the reference executor's stepwise form implements them (the registry refuses them
elsewhere).

``Plasticity.at(t)`` answers the switches for token t; every executor asks it, never re-derives it.
"""

from __future__ import annotations

import dataclasses
import math

import torch

from ..errors import ConfigError


@dataclasses.dataclass(frozen=True)
class TokenRule:
    """What the plastic synapses do at one token: reset first, or decay by ``decay``, then write?"""

    reset: bool
    decay: float | None  # the factor S is multiplied by before the read; None: no decay
    write: bool


@dataclasses.dataclass(frozen=True)
class Plasticity:
    """Switches on the Hebbian working memory (intact when all are None).

    freeze_after k: tokens with index >= k no longer write (reads continue).
    reset_every m: the state is zeroed at the start of every token whose index is a multiple of m.
    decay_tau_tokens tau: at the start of every token t > 0 the state is multiplied by exp(-1/tau).
    noise sigma: after every token's write (made or frozen), every synapse of a head gets additive
        Gaussian noise of standard deviation sigma * rms(x) * rms(q) (the root mean square of that
        token's own increment x ⊗ q over the head's synapses), drawn from a generator seeded with
        noise_seed (token by token, layer by layer, the whole (B,H,D,N) block at once).
    lesion: synapses (row, layer, head, d, n) held at 0 for the whole sequence (row: the sequence
        in the batch); d indexes the residual (x) dimension, n the neuron.
    """

    freeze_after: int | None = None
    reset_every: int | None = None
    decay_tau_tokens: float | None = None
    noise: float | None = None
    noise_seed: int = 0
    lesion: tuple | None = None

    @classmethod
    def from_dict(cls, spec: dict | None) -> "Plasticity":
        if spec is not None and not isinstance(spec, dict):
            raise ConfigError(f"plasticity must be a dict of switches or a Plasticity, got {type(spec).__name__}")
        spec = dict(spec or {})
        unknown = set(spec) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ConfigError(f"unknown plasticity switch(es) {sorted(unknown)}: use freeze_after, "
                              "reset_every, decay_tau_tokens, noise, noise_seed, lesion")
        if spec.get("lesion") is not None:
            try:
                spec["lesion"] = tuple(tuple(int(i) for i in syn) for syn in spec["lesion"])
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"lesion must be a list of (row, layer, head, d, n) integers: {exc}") from None
        return cls(**spec).validate()

    @classmethod
    def coerce(cls, spec) -> "Plasticity":
        """A Plasticity (validated) from a Plasticity, a dict of switches or None."""
        return spec.validate() if isinstance(spec, Plasticity) else cls.from_dict(spec)

    def validate(self) -> "Plasticity":
        fa, re, tau = self.freeze_after, self.reset_every, self.decay_tau_tokens
        if fa is not None and (isinstance(fa, bool) or not isinstance(fa, (int, float)) or int(fa) != fa or fa < 0):
            raise ConfigError(f"freeze_after must be an integer >= 0, got {fa}")
        if re is not None and (isinstance(re, bool) or not isinstance(re, (int, float)) or int(re) != re or re < 1):
            raise ConfigError(f"reset_every must be an integer >= 1, got {re}")
        if tau is not None and (isinstance(tau, bool) or not isinstance(tau, (int, float)) or not tau > 0):
            raise ConfigError(f"decay time constant must be > 0, got {tau}")
        sigma = self.noise
        if sigma is not None and (isinstance(sigma, bool) or not isinstance(sigma, (int, float))
                                  or not 0 <= sigma < math.inf):
            raise ConfigError(f"synaptic noise must be a finite number >= 0, got {sigma}")
        if isinstance(self.noise_seed, bool) or not isinstance(self.noise_seed, int) or self.noise_seed < 0:
            raise ConfigError(f"noise_seed must be an integer >= 0, got {self.noise_seed}")
        if self.lesion is not None and not all(isinstance(syn, tuple) and len(syn) == 5 and
                                               all(isinstance(i, int) and i >= 0 for i in syn) for syn in self.lesion):
            raise ConfigError("lesion must be a tuple of (row, layer, head, d, n) integers >= 0")
        return self

    @property
    def intact(self) -> bool:
        return (self.freeze_after is None and self.reset_every is None and self.decay_tau_tokens is None
                and not self.perturbed)

    @property
    def perturbed(self) -> bool:
        """Synaptic noise or a lesion: executed by the reference executor's stepwise form only."""
        return bool(self.noise) or bool(self.lesion)

    def check_lesion(self, dims, batch: int) -> None:
        """Every lesioned synapse exists in a network of these dims run on this many sequences."""
        for syn in self.lesion or ():
            if any(i >= m for i, m in zip(syn, (batch, dims.L, dims.H, dims.D, dims.N))):
                raise ConfigError(f"lesioned synapse (row, layer, head, d, n) = {syn} is outside "
                                  f"({batch}, {dims.L}, {dims.H}, {dims.D}, {dims.N})")

    @property
    def decay(self) -> float:
        return 1.0 if self.decay_tau_tokens is None else math.exp(-1.0 / self.decay_tau_tokens)

    def writes(self, t: int) -> bool:
        return self.freeze_after is None or t < self.freeze_after

    def resets(self, t: int) -> bool:
        return self.reset_every is not None and t % self.reset_every == 0

    def at(self, t: int) -> TokenRule:
        reset = self.resets(t)
        decays = not reset and t > 0 and self.decay != 1.0
        return TokenRule(reset=reset, decay=self.decay if decays else None, write=self.writes(t))

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def noise_generator(plasticity: Plasticity) -> torch.Generator | None:
    """The seeded generator of the synaptic noise (CPU; draws are moved to the state's device)."""
    if not plasticity.noise:
        return None
    return torch.Generator().manual_seed(int(plasticity.noise_seed))


def perturb_step(S: torch.Tensor, x: torch.Tensor, q: torch.Tensor, layer: int, plasticity: Plasticity,
                 generator: torch.Generator | None) -> None:
    """After one token's write on layer ``layer``'s state S (B,H,D,N), in place: additive synaptic
    noise sigma * rms(x) rms(q) * N(0, 1) per synapse, then the lesioned synapses set to 0."""
    if plasticity.noise:
        scale = x.pow(2).mean(-1).sqrt()[:, None] * q.pow(2).mean(-1).sqrt()  # B,H
        eps = torch.randn(S.shape, generator=generator, dtype=torch.float32).to(S.device, S.dtype)
        S += float(plasticity.noise) * scale[:, :, None, None] * eps
    for row, lay, head, d, n in plasticity.lesion or ():
        if lay == layer:
            S[row, head, d, n] = 0.0


def chunk_bounds(n_tokens: int, chunk: int, plasticity: Plasticity) -> list:
    """(start, stop) of each chunk of the token-parallel form: chunks never straddle a reset."""
    cuts = set(range(0, n_tokens, chunk))
    if plasticity.reset_every:
        cuts |= set(range(0, n_tokens, int(plasticity.reset_every)))
    cuts = sorted(cuts) + [n_tokens]
    return [(a, b) for a, b in zip(cuts[:-1], cuts[1:]) if b > a]


def plastic_step(S: torch.Tensor, x: torch.Tensor, q: torch.Tensor, rule: TokenRule) -> torch.Tensor:
    """One token on the fixed-frame state S (B,H,D,N), in place: switches, read u = S q (B,H,D), write."""
    if rule.reset:
        S.zero_()
    elif rule.decay is not None:
        S.mul_(rule.decay)
    u = torch.einsum("bhdn,bhn->bhd", S, q)  # read before the write
    if rule.write:
        S += x[:, None, :, None] * q[:, :, None, :]
    return u


def plastic_chunk(S: torch.Tensor, x: torch.Tensor, q: torch.Tensor, t0: int, plasticity: Plasticity):
    """Readouts u_t = S_t q_t of a chunk of tokens and the state after its last write.

    The same rule as ``plastic_step`` token by token, as chunked linear attention plus the carried
    state. S: B,H,D,N (fixed frame); x: B,Tc,D; q: B,Tc,H,N. Returns (u: B,Tc,H,D, S_new). The
    chunk must not straddle a reset (``chunk_bounds``).
    """
    Tc = x.shape[1]
    dev, dtype = x.device, S.dtype
    qh = q.transpose(1, 2)  # B,H,Tc,N
    if plasticity.resets(t0):
        S = torch.zeros_like(S)
    pos = torch.arange(t0, t0 + Tc, device=dev)
    write = torch.tensor([plasticity.writes(int(t)) for t in pos], device=dev, dtype=dtype)
    lam = plasticity.decay
    scores = (qh @ qh.mT).tril(diagonal=-1) * write[None, None, None, :]
    if lam != 1.0:
        lam_t = torch.tensor(lam, dtype=dtype, device=dev)
        gap = (pos[:, None] - pos[None, :]).clamp(min=0).to(dtype)
        scores = scores * torch.pow(lam_t, gap)
        carry = torch.pow(lam_t, (pos - t0 + 1).to(dtype))
        if t0 == 0:
            carry = torch.ones_like(carry)
        carry_new = lam ** (Tc - 1 + (1 if t0 > 0 else 0))
        weight_new = write * lam ** ((t0 + Tc - 1 - pos).to(dtype))
    else:
        carry = torch.ones(Tc, device=dev, dtype=dtype)
        carry_new = 1.0
        weight_new = write
    u = scores @ x[:, None] + (qh @ S.mT) * carry[None, None, :, None]  # B,H,Tc,D
    S_new = carry_new * S + x[:, None].mT @ (qh * weight_new[None, None, :, None])
    return u.transpose(1, 2), S_new
