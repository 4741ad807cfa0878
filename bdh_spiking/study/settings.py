"""What a study run is asked to do (``StudySettings``), checked before any model work."""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

from ..errors import ConfigError

Log = Callable[[str], None]


@dataclasses.dataclass
class StudySettings:
    out: str
    checkpoint: str | None = None
    text: str | None = None
    concepts_file: str | None = None
    seed: int = 0
    quick: bool = False
    timesteps: int = 8
    max_spikes: int = 4
    seq_len: int = 256
    max_tokens: int = 4096  # experiments 1 and 3
    sweep_tokens: int = 4096  # experiment 2
    token_ms: float = 100.0
    dt_ms: float = 1.0
    taus_ms: tuple = (300.0, 1000.0, 3000.0)
    rates_cps: tuple = (5.0, 10.0, 20.0)
    freeze_after: tuple = (64,)
    reset_every: tuple = (32,)
    shifts: int = 19  # experiment 1: decoy shifts (every one tested as a fake concept)
    fdr: float = 0.05  # kept for the figures' label; experiment 1 uses alpha (family-wise)
    alpha: float = 0.05  # experiment 1: family-wise level of the maxT test
    permutations: int = 100  # experiment 1: within-stratum label permutations per label
    synapse_sample: int | None = 2048  # experiment 1: synapses drawn per layer and family (None: all)
    top_k: int = 10
    n_layer: int | None = None
    calibration_bytes: int | None = None
    layers: tuple | None = None  # experiment 1 analyses these layers (None: all)
    bio_tokens: int = 32  # brian2 biophysical runs (all three experiments) on a window of this many bytes

    def validate(self) -> "StudySettings":
        self._check_times()
        if self.shifts < 1:
            raise ConfigError(f"experiment 1 needs at least 1 decoy shift, got {self.shifts}")
        if not 0 < self.fdr < 1:
            raise ConfigError(f"FDR level must be in (0, 1), got {self.fdr}")
        if not 0 < self.alpha < 1:
            raise ConfigError(f"family-wise level must be in (0, 1), got {self.alpha}")
        if 1.0 / (self.permutations + 1) > self.alpha:
            raise ConfigError(f"{self.permutations} permutations cannot reach p <= {self.alpha}: use at least "
                              f"{math.ceil(1.0 / self.alpha - 1)}")
        if self.synapse_sample is not None and self.synapse_sample < 1:
            raise ConfigError(f"--synapse-sample must be >= 1, got {self.synapse_sample}")
        for tokens in self.freeze_after:
            if tokens < 0:
                raise ConfigError(f"freeze_after must be >= 0, got {tokens}")
        for tokens in self.reset_every:
            if tokens < 1:
                raise ConfigError(f"reset_every must be >= 1, got {tokens}")
        if self.bio_tokens < 0:
            raise ConfigError(f"--bio-tokens must be >= 0 (0 skips the biophysical runs), got {self.bio_tokens}")
        if self.bio_tokens > 0:  # a bad BDH_SPIKING_BRIAN2_TARGET fails here, not after the reference runs
            from ..backends.brian2 import check_target

            check_target("auto")
        return self

    def _check_times(self) -> None:
        """Token times, steps, decay constants and rates: positive, and a token holds its T steps."""
        if not self.token_ms > 0 or not math.isfinite(self.token_ms):
            raise ConfigError(f"token time must be > 0 ms, got {self.token_ms}")
        if not self.dt_ms > 0:
            raise ConfigError(f"simulation step must be > 0 ms, got {self.dt_ms}")
        for tau in self.taus_ms:
            if not tau > 0 or not math.isfinite(tau):
                raise ConfigError(f"decay time constants must be > 0 ms, got {tau}")
        for rate in self.rates_cps:
            if not rate > 0:
                raise ConfigError(f"presentation rates must be > 0 characters/s, got {rate}")
        step_ms = self.timesteps * self.dt_ms
        for token_ms in [self.token_ms] + [1000.0 / r for r in self.rates_cps]:
            if token_ms < step_ms:
                raise ConfigError(f"token time {token_ms:g} ms is shorter than its T={self.timesteps} simulation "
                                  f"steps of {self.dt_ms:g} ms ({step_ms:g} ms)")
