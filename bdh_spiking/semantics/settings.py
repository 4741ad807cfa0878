"""What a simulation is asked to compute: codings, modes, timesteps, and the checks on them."""

from __future__ import annotations

import dataclasses

from ..errors import ConfigError

CODINGS = ("graded", "rate", "multispike")
MODES = ("discrete", "fixed-point", "biophysical")
TIE_EPS = 1e-9  # |v - boundary| below this at a deciding step is a near-threshold tie
GRADED_RTOL = 1e-9  # graded payloads are floats: equal means equal to this relative tolerance
MAX_TIMESTEPS = 4096


def is_int(value) -> bool:
    """A true integer (bool is not one)."""
    return isinstance(value, int) and not isinstance(value, bool)


@dataclasses.dataclass(frozen=True)
class SimSettings:
    """timesteps: neuron timesteps per token (not tokens); max_spikes: multispike's K."""

    timesteps: int = 8
    coding: str = "rate"
    max_spikes: int = 4  # multispike: at most this many spikes per neuron per step
    mode: str = "discrete"

    def validate(self) -> "SimSettings":
        if self.coding not in CODINGS:
            raise ConfigError(f"unknown coding {self.coding!r}: use one of {', '.join(CODINGS)}")
        if self.mode not in MODES:
            raise ConfigError(f"unknown mode {self.mode!r}: use one of {', '.join(MODES)}")
        if not is_int(self.timesteps) or self.timesteps < 1:
            raise ConfigError(f"timesteps must be an integer >= 1, got {self.timesteps!r}")
        if self.timesteps > MAX_TIMESTEPS:
            raise ConfigError(f"timesteps {self.timesteps} is absurdly large (max {MAX_TIMESTEPS})")
        if self.coding == "multispike" and (not is_int(self.max_spikes) or self.max_spikes < 1):
            raise ConfigError(f"max spikes per step must be an integer >= 1, got {self.max_spikes!r}")
        return self

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def check_chunk(chunk) -> int:
    """Tokens per chunk of the token-parallel forms: an integer >= 1, else a one-line error."""
    if not is_int(chunk) or chunk < 1:
        raise ConfigError(f"chunk must be an integer >= 1, got {chunk!r}")
    return chunk
