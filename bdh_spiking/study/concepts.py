"""Concepts: parsing, where they occur in the text, and the per-token labels the experiments test."""

from __future__ import annotations

import codecs
import dataclasses
import re
from pathlib import Path

import numpy as np

from ..errors import TextError
from .settings import Log, StudySettings

# Default concepts for the shipped held-out text (Taming of the Shrew, Act II): the four speaker
# names that recur both as speaker tags ("GREMIO:") and inside speech ("Gremio"), Katharina with her
# other name "Kate" (a concept of several spellings), a common function word, and the punctuation
# pattern that ends every speaker tag.
DEFAULT_CONCEPTS = ["GREMIO", "BAPTISTA", "PETRUCHIO", "KATHARINA|Kate", "the", ":\\n"]


def parse_concepts(lines) -> list[str]:
    """One concept per line; backslash escapes (\\n, \\t) are decoded; blank lines skipped."""
    out = []
    for line in lines:
        line = line.rstrip("\r\n")
        if not line.strip():
            continue
        try:
            out.append(codecs.decode(line, "unicode_escape"))
        except UnicodeDecodeError as exc:
            raise TextError(f"bad escape in concept {line!r}: {exc.reason}") from None
    return out


def concept_pattern(concept: str) -> re.Pattern:
    """Alphabetic concepts match as whole words, case-insensitively (the tag 'GREMIO:' and the
    name 'Gremio' in speech are one concept); anything else matches literally, case-sensitively."""
    raw = concept.encode("utf-8")
    if re.fullmatch(rb"[A-Za-z]+", raw):
        return re.compile(rb"(?<![A-Za-z])" + re.escape(raw) + rb"(?![A-Za-z])", re.IGNORECASE)
    return re.compile(re.escape(raw))


def concept_forms(concept: str) -> list[str]:
    """The surface forms of a concept: '|' separates them ('KATHARINA|Kate'); a concept without '|'
    (or '|' alone) is its own single form."""
    forms = [f for f in concept.split("|") if f]
    return forms if len(forms) > 1 else [concept]


def concept_occurrences(data: bytes, concept: str) -> list[tuple[int, int]]:
    """(start, end) of every occurrence of any of the concept's forms, in text order."""
    spans = {(m.start(), m.end()) for form in concept_forms(concept) for m in concept_pattern(form).finditer(data)}
    return sorted(spans)


def form_counts(data: bytes, concept: str) -> dict:
    """Occurrences of each surface form of a concept."""
    return {form: len(concept_pattern(form).findall(data)) for form in concept_forms(concept)}


def concept_labels(data: bytes, concepts: list[str]) -> tuple[np.ndarray, dict]:
    """(n_tokens, C) bool: token t lies inside an occurrence of concept c. Plus the occurrences."""
    labels = np.zeros((len(data), len(concepts)), dtype=bool)
    occ = {}
    for j, c in enumerate(concepts):
        occ[c] = concept_occurrences(data, c)
        for start, end in occ[c]:
            labels[start:end, j] = True
    return labels, occ


@dataclasses.dataclass
class StudyInputs:
    """The analysed text as passages, the concepts that occur in it and their labels."""

    text_name: str
    used: bytes  # the analysed bytes: n_passages * seq_len
    seq_len: int
    n_passages: int
    concepts: list
    labels: np.ndarray  # (n_tokens, C) bool
    occurrences: dict  # concept -> [(start, end)]
    explicit: bool  # concepts from a file (else the defaults)


def _read_text(settings: StudySettings) -> tuple[bytes, str]:
    from ..text import read_bytes, shipped_text_path

    if settings.text:
        return read_bytes(settings.text, what="study text"), settings.text
    path = shipped_text_path("heldout")
    return read_bytes(path), f"shipped:{path.name}"


def _read_concepts(concepts_file: str | None) -> tuple[list[str], bool]:
    if not concepts_file:
        return [codecs.decode(c, "unicode_escape") for c in DEFAULT_CONCEPTS], False
    path = Path(concepts_file)
    if not path.is_file():
        raise TextError(f"concepts file not found: {path}")
    concepts = parse_concepts(path.read_text(encoding="utf-8", errors="replace").splitlines())
    if not concepts:
        raise TextError(f"concepts file {path} holds no concept (one per line)")
    return concepts, True


def load_inputs(settings: StudySettings, log: Log) -> StudyInputs:
    """Text, concepts and labels, validated before any model work."""
    data, text_name = _read_text(settings)
    seq_len = min(settings.seq_len, len(data))
    n_passages = min(len(data) // seq_len, max(1, settings.max_tokens // seq_len))
    if n_passages == 0:
        raise TextError(f"study text of {len(data)} bytes is shorter than one passage of {seq_len}")
    used = bytes(data[: n_passages * seq_len])
    concepts, explicit = _read_concepts(settings.concepts_file)
    labels, occ = concept_labels(used, concepts)
    missing = [c for c in concepts if not occ[c]]
    if missing and len(missing) == len(concepts):
        raise TextError(f"none of the concepts occurs in the {len(used)} bytes of {text_name} analysed: "
                        f"{', '.join(map(repr, missing))}")
    if missing:
        log(f"concepts without occurrences in the analysed text, dropped: {', '.join(map(repr, missing))}")
        keep = [i for i, c in enumerate(concepts) if occ[c]]
        concepts = [concepts[i] for i in keep]
        labels = labels[:, keep]
    return StudyInputs(text_name, used, seq_len, n_passages, concepts, labels, occ, explicit)
