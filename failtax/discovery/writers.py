"""Writer invariance: group explanations by what happened, not by who wrote them.

Reports from several writers (fleet operators, sites, reasoner prompts) carry the
writer's template: a header with the fleet name and a ticket id, a legal footer,
fixed field lines, a vocabulary. Sentence embeddings and TF-IDF see those first,
so clusters follow writers. Two generic steps, neither knowing any template:

1. **Strip boilerplate.** Split each text into segments (lines, sentences, ``|``
   fields), normalise them (every token holding a digit and every capitalised
   word after the first becomes ``#``, lower case, punctuation runs collapsed) and drop segments whose normalised form
   recurs in at least `boilerplate_min_share` of all texts: a sentence that
   many reports repeat verbatim says nothing about any one failure. A text that
   would lose everything keeps its rarest segments.
2. **Standardise per writer.** Writers are found from the boilerplate itself: two
   boilerplate segments belong to one writer when the sets of texts holding them
   overlap (Jaccard >= 0.7); each text joins the writer whose boilerplate it
   carries most of. With two or more writers, each writer's features are
   standardised on their own (the writer's mean subtracted, each dimension divided
   by the writer's spread). What remains is what differs between reports of the
   same writer, on one scale for all writers.

    view = writer_view(texts, min_share=0.1)
    view.texts        # stripped texts (cluster, keywords, samples)
    view.groups       # writer id per text, -1 = none found
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# Segment boundaries: line breaks, sentence ends, "|" field separators, " -- " dashes.
_SPLIT = re.compile(r"\n+|(?<=[.!?])\s+(?=\S)|\s+\|\s+|\s+--+\s+")
_DIGIT_TOKEN = re.compile(r"\S*\d\S*")
_NON_WORD = re.compile(r"[^\w#]+")

# Overlap (Jaccard of the texts holding them) above which two boilerplate segments share a writer.
WRITER_LINK_JACCARD = 0.7


def split_segments(text: str) -> list[str]:
    """Lines, sentences and `|`-separated fields of `text`, stripped, empty ones dropped."""
    parts = (s.strip().lstrip("-|").strip() for s in _SPLIT.split(text) if s)
    return [s for s in parts if s]


def normalise_segment(segment: str) -> str:
    """The form compared across texts: tokens with digits and capitalised words after the
    first (ids, dates, times, names of streets, sites and people) → ``#``, runs of ``#``
    → one, lower case, punctuation runs → one space. So a template line filled with
    different ids, places or spacing is still one line."""
    tokens = _DIGIT_TOKEN.sub(" # ", segment).split()
    tokens = tokens[:1] + ["#" if t[:1].isupper() else t for t in tokens[1:]]
    words = _NON_WORD.sub(" ", " ".join(tokens).lower()).split()
    return " ".join(w for i, w in enumerate(words) if not (w == "#" and i and words[i - 1] == "#"))


def find_boilerplate(texts: Sequence[str], min_share: float, min_count: int = 3) -> dict[str, int]:
    """Normalised segments found in at least `min_share` of `texts` (and `min_count` texts),
    with the number of texts holding each."""
    df: Counter[str] = Counter()
    for t in texts:
        df.update({normalise_segment(s) for s in split_segments(t)} - {""})
    need = max(min_count, int(np.ceil(min_share * len(texts))))
    return {s: n for s, n in df.items() if n >= need}


def strip_boilerplate(text: str, boilerplate: dict[str, int]) -> str:
    """`text` without its boilerplate segments, joined by spaces.

    When every segment is boilerplate, the rarest ones stay (a small corpus repeats its
    content sentences too, but less often than its headers); a text with no segments
    comes back whitespace-collapsed.
    """
    segs = split_segments(text)
    keys = [normalise_segment(s) for s in segs]
    kept = [s for s, k in zip(segs, keys) if k not in boilerplate]
    if not kept and segs:
        rarest = min(boilerplate.get(k, 0) for k in keys)
        kept = [s for s, k in zip(segs, keys) if boilerplate.get(k, 0) == rarest]
    return " ".join(" ".join(kept).split()) if kept else " ".join(text.split())


def writer_groups(texts: Sequence[str], boilerplate: set[str] | dict[str, int], min_size: int = 2) -> np.ndarray:
    """A writer id per text (0..g-1; -1 when it carries no boilerplate of a found writer).

    Boilerplate segments are linked when the texts holding them overlap (Jaccard >=
    WRITER_LINK_JACCARD); the linked sets are writers. Each text joins the writer
    whose segments it holds most of (ties: the larger writer). Writers with fewer
    than `min_size` texts are dropped (their texts get -1).
    """
    segs = sorted(boilerplate)
    if not segs:
        return np.full(len(texts), -1, dtype=int)
    index = {s: i for i, s in enumerate(segs)}
    holds = np.zeros((len(texts), len(segs)), dtype=bool)
    for r, t in enumerate(texts):
        for s in split_segments(t):
            j = index.get(normalise_segment(s))
            if j is not None:
                holds[r, j] = True
    counts = holds.sum(axis=0).astype(float)
    inter = holds.T.astype(float) @ holds.astype(float)
    jaccard = inter / np.maximum(counts[:, None] + counts[None, :] - inter, 1.0)
    parent = list(range(len(segs)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b in zip(*np.nonzero(np.triu(jaccard >= WRITER_LINK_JACCARD, k=1))):
        parent[find(int(a))] = find(int(b))
    roots = sorted({find(i) for i in range(len(segs))})
    comp = np.array([roots.index(find(i)) for i in range(len(segs))])
    member = np.zeros((len(segs), len(roots)))
    member[np.arange(len(segs)), comp] = 1.0
    per_writer = holds.astype(float) @ member  # boilerplate segments of each writer per text
    size = (per_writer > 0).sum(axis=0)
    score = per_writer + 1e-6 * size[None, :] / max(len(texts), 1)  # ties → the larger writer
    raw = np.where(per_writer.max(axis=1) > 0, score.argmax(axis=1), -1)
    out = np.full(len(texts), -1, dtype=int)
    kept = [w for w, n in Counter(raw[raw >= 0].tolist()).most_common() if n >= min_size]
    for new, w in enumerate(sorted(kept)):
        out[raw == w] = new
    return out


def centre_by_group(x: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Rows of `x` standardised per writer, then L2-normalised.

    Each writer's rows lose the writer's mean and are divided by the writer's
    per-dimension spread (a terse template varies little, a narrative a lot; no
    writer's own variation should dominate). Rows with group -1 are centred on the
    mean of all rows with a writer and divided by the pooled spread.
    """
    x = np.asarray(x, dtype=np.float64)
    known = groups >= 0
    if not known.any():
        return _unit(x)
    z = x - x[known].mean(axis=0)
    pooled = z[known].std(axis=0) + 1e-6
    scale = np.tile(pooled, (len(z), 1))
    for g in sorted(set(groups[known].tolist())):
        m = groups == g
        z[m] = x[m] - x[m].mean(axis=0)
        if m.sum() >= 2:
            scale[m] = z[m].std(axis=0) + 1e-6
    return _unit(z / scale)


def _unit(z: np.ndarray) -> np.ndarray:
    return (z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)).astype(np.float32)


@dataclass
class WriterView:
    """The explanations as discovery sees them after writer invariance."""

    texts: list[str]  # boilerplate stripped
    groups: np.ndarray  # writer id per text, -1 = none
    boilerplate: dict[str, int] = field(default_factory=dict)  # normalised segment → texts holding it
    stripped_texts: int = 0  # texts that lost at least one segment
    writers_from: str = "boilerplate"  # "column" when the source named each text's writer

    @property
    def writers(self) -> int:
        return len(set(self.groups[self.groups >= 0].tolist()))

    def notes(self) -> dict[str, Any]:
        sizes = Counter(self.groups.tolist())
        top = sorted(self.boilerplate.items(), key=lambda kv: (-kv[1], kv[0]))[:10]
        return {
            "boilerplate_segments": len(self.boilerplate),
            "boilerplate_examples": [s for s, _ in top],
            "texts_stripped": self.stripped_texts,
            "writers": self.writers,
            "writers_from": self.writers_from,
            "writer_sizes": [sizes[g] for g in range(self.writers)],
            "texts_without_writer": sizes.get(-1, 0),
            "centred": self.writers >= 2,
        }


def known_writer_groups(writers: Sequence[str | None], min_size: int) -> np.ndarray:
    """Writer ids (0..g-1, in order of first appearance) from named writers; -1 for texts
    without one and for writers with fewer than `min_size` texts."""
    counts = Counter(w for w in writers if w)
    ids: dict[str, int] = {}
    for w in writers:
        if w and counts[w] >= min_size and w not in ids:
            ids[w] = len(ids)
    return np.array([ids.get(w, -1) if w else -1 for w in writers], dtype=int)


def writer_view(texts: Sequence[str], *, min_share: float, min_writer_share: float,
                writers: Sequence[str | None] | None = None) -> WriterView:
    """Strip boilerplate from `texts` and find their writers (see module docstring).

    `writers` (one name or None per text, from a column the user named) replaces the
    writers inferred from boilerplate when it names any; boilerplate is stripped either way.
    """
    boiler = find_boilerplate(texts, min_share)
    stripped = [strip_boilerplate(t, boiler) for t in texts]
    min_size = max(2, int(np.ceil(min_writer_share * len(texts))))
    named = writers is not None and any(writers)
    groups = (known_writer_groups(writers, min_size) if named
              else writer_groups(texts, boiler, min_size=min_size))
    changed = sum(a != " ".join(b.split()) for a, b in zip(stripped, texts))
    return WriterView(stripped, groups, boiler, changed, "column" if named else "boilerplate")
