"""Associative recall: K fresh key->value pairs, a filler gap, then K queries.

One episode with K pairs and a gap of G bytes (all alphabets pairwise disjoint)::

    study   k1 v1 k2 v2 ... kK vK           2K bytes  (keys: distinct lowercase letters,
                                                       values: digits, drawn uniformly)
    filler  f1 ... fG                       G bytes   (uppercase letters)
    queries ? kp1 vp1  ? kp2 vp2 ...        3K bytes  (every key once, in a random order)

The answer bytes are the values inside the queries (position ``query_start + 3 i + 2``); a
next-byte model answers query i with its prediction at the position before. The keys are
fresh in every episode, so the binding key -> value exists only in the episode itself: a
network can answer only from its context memory (in BDH, the plastic synapses). The layout
depends on (K, G) only, so a batch of episodes with the same (K, G) shares its answer positions.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..errors import ConfigError

KEYS = b"abcdefghijklmnopqrstuvwxyz"
VALUES = b"0123456789"
FILLER = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ"
QUERY = b"?"


def chance_accuracy() -> float:
    """Accuracy of a guess that ignores the episode: values are uniform over the 10 digits."""
    return 1.0 / len(VALUES)


@dataclasses.dataclass(frozen=True)
class RecallBatch:
    """n episodes of the same layout. ids: (n, 5K+G) uint8; answers: (K,) positions of the
    answer bytes; values: (n, K) the answer bytes in query order; lags: (n, K) tokens from each
    value's study position to its answer position; query_start = 2K + G."""

    ids: np.ndarray
    answers: np.ndarray
    values: np.ndarray
    lags: np.ndarray
    K: int
    G: int

    @property
    def query_start(self) -> int:
        return 2 * self.K + self.G

    @property
    def study_end(self) -> int:
        return 2 * self.K


def _check(K: int, G: int) -> None:
    if not 1 <= K <= len(KEYS):
        raise ConfigError(f"number of pairs K must be in 1..{len(KEYS)}, got {K}")
    if G < 0:
        raise ConfigError(f"filler gap G must be >= 0, got {G}")


def make_episode(rng: np.random.Generator, K: int, G: int,
                 repeat_queries: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One episode: (bytes as a uint8 array of length 5K+G, the K answer bytes in query order,
    the K lags: answer position minus the position of the same value in the study phase).
    repeat_queries: the K queried keys are drawn with replacement (a training variant: answering
    by elimination of the values already queried is then useless; docs/study.md)."""
    _check(K, G)
    keys = rng.choice(np.frombuffer(KEYS, np.uint8), size=K, replace=False)
    values = rng.choice(np.frombuffer(VALUES, np.uint8), size=K, replace=True)
    filler = rng.choice(np.frombuffer(FILLER, np.uint8), size=G, replace=True)
    order = rng.integers(0, K, K) if repeat_queries else rng.permutation(K)
    study = np.stack([keys, values], 1).reshape(-1)
    queries = np.stack([np.full(K, QUERY[0], np.uint8), keys[order], values[order]], 1).reshape(-1)
    lags = (2 * K + G + 3 * np.arange(K) + 2) - (2 * order + 1)
    return np.concatenate([study, filler, queries]).astype(np.uint8), values[order].astype(np.uint8), lags


def make_batch(seed_or_rng, K: int, G: int, n: int, repeat_queries: bool = False) -> RecallBatch:
    """n episodes with K pairs and gap G, reproducible from an integer seed (or a Generator)."""
    rng = seed_or_rng if isinstance(seed_or_rng, np.random.Generator) else np.random.default_rng(seed_or_rng)
    if n < 1:
        raise ConfigError(f"number of episodes must be >= 1, got {n}")
    rows = [make_episode(rng, K, G, repeat_queries) for _ in range(n)]
    q0 = 2 * K + G
    return RecallBatch(ids=np.stack([r[0] for r in rows]), answers=q0 + 3 * np.arange(K) + 2,
                       values=np.stack([r[1] for r in rows]), lags=np.stack([r[2] for r in rows]), K=K, G=G)
