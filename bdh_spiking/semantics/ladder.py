"""The biological fidelity ladder of the biophysical mode: its rungs, in order, and the parsing of
a request (docs/spiking-semantics.md, "Biophysical mode", "The fidelity ladder").

Rungs are cumulative: asking for a rung runs the network with it and every rung before it. A
backend builds the equations of each rung (Brian2: bdh_spiking/backends/brian2/rungs.py); here
are only the names, their order and which are built."""

from __future__ import annotations

from ..errors import ConfigError

# the whole ladder in order (issues 15 and 16); BUILT: the rungs an executor implements today
LADDER = ("rate-linearized", "lif", "psc", "dale", "onoff", "local-plasticity", "divisive-norm")
BUILT = LADDER  # every rung of issues 15 and 16 is built
DEFAULT_RUNG = "rate-linearized"
# the first rung whose network is Brian2 objects only (no NetworkOperation, no window reset): from it
# on, a network can run on Brian2's standalone devices
STANDALONE_FROM = "psc"


def _names(spec) -> list:
    if isinstance(spec, str):
        return [s.strip() for s in spec.split(",") if s.strip()]
    try:
        return [str(s).strip() for s in spec]
    except TypeError:
        raise ConfigError(f"ladder: expected RUNG[,RUNG..] or 'all', got {spec!r}") from None


def parse_ladder(spec) -> tuple:
    """'all', 'lif', 'rate-linearized,lif' or a list -> the rungs asked for, in ladder order.

    Unknown rungs, rungs out of order, repeats and rungs not built yet are refused (ConfigError)."""
    names = _names(spec)
    if names == ["all"]:
        return BUILT
    if not names:
        raise ConfigError(f"ladder: no rung given (use one or more of {', '.join(LADDER)}, or 'all')")
    for name in names:
        if name not in LADDER:
            raise ConfigError(f"ladder: unknown rung {name!r} (the ladder: {', '.join(LADDER)})")
    pos = [LADDER.index(n) for n in names]
    if any(b <= a for a, b in zip(pos, pos[1:])):
        raise ConfigError(f"ladder: rungs out of order or repeated ({','.join(names)}); the order is "
                          f"{', '.join(LADDER)}")
    missing = [n for n in names if n not in BUILT]
    if missing:
        raise ConfigError(f"ladder: rung(s) {', '.join(missing)} not built yet (built: {', '.join(BUILT)})")
    return tuple(names)


def rungs_through(rung: str) -> tuple:
    """The rungs a network at ``rung`` applies (cumulative): every rung up to and including it."""
    if rung not in BUILT:
        raise ConfigError(f"ladder: rung {rung!r} is not built (built: {', '.join(BUILT)})")
    return LADDER[: LADDER.index(rung) + 1]


def top_rung(spec) -> str:
    """The network a single simulation runs: the highest rung asked for (the rungs are cumulative)."""
    return parse_ladder(spec)[-1]


def runs_standalone(rung: str) -> bool:
    """Whether the network at ``rung`` is Brian2 objects only (so it can run cpp_standalone)."""
    return LADDER.index(rung) >= LADDER.index(STANDALONE_FROM)
