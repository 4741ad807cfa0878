"""Synthetic byte-sequence tasks with known answers (below train.py and the study)."""

from .recall import (FILLER, KEYS, QUERY, VALUES, RecallBatch, chance_accuracy, make_batch,
                     make_episode)

__all__ = ["FILLER", "KEYS", "QUERY", "VALUES", "RecallBatch", "chance_accuracy", "make_batch", "make_episode"]
