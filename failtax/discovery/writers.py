"""Writer invariance: group explanations by what happened, not by who wrote them.

Reports from several writers (fleet operators, sites, reasoner prompts) carry the
writer's template: a header with the fleet name and a ticket id, a legal footer,
fixed field lines, template sentences whose fields change in every report ("On
# at #, a # operating in autonomous mode was travelling # when ..."), a vocabulary.
Sentence embeddings and TF-IDF see those first, so clusters follow writers. Generic
steps, none knowing any template:

1. **Strip boilerplate.** Split each text into segments (lines, sentences, ``|``
   fields), normalise them (every token holding a digit and every capitalised
   word after the first becomes ``#``, lower case, punctuation runs collapsed) and drop segments whose normalised form
   recurs in at least `boilerplate_min_share` of all texts: a sentence that
   many reports repeat verbatim says nothing about any one failure. A text that
   would lose everything keeps its rarest segments.
2. **Find the writers** from their marks: boilerplate segments and *template
   phrases* (normalised runs of PHRASE_WORDS words in at least `min_share` of the
   texts, so a template sentence whose fields vary is still seen). Two marks belong
   to one writer when the sets of texts holding them overlap (Jaccard >= 0.7); a set
   of phrases alone that sits in one sentence of a typical text is one writer's
   sentence form, not a writer. Each text joins the writer whose marks it carries
   most of; the texts that carry none form one more writer (``unmarked``: a writer
   that keeps no template) once any writer is found.
3. **Cut template phrases** that at least WRITER_PHRASE_SHARE of one writer's texts
   hold out of the sentences, with the identifiers, dates and names filled into
   them; measurements (decimal numbers) stay. `WriterView.sentence_texts` keeps the
   texts with only whole segments stripped.
4. **Standardise per writer.** With two or more writers, each writer's features are
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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# Segment boundaries: line breaks, sentence ends, "|" field separators, " -- " dashes.
_SPLIT = re.compile(r"\n+|(?<=[.!?])\s+(?=\S)|\s+\|\s+|\s+--+\s+")
_DIGIT_TOKEN = re.compile(r"\S*\d\S*")
_NON_WORD = re.compile(r"[^\w#]+")
_MEASUREMENT = re.compile(r"[~≈]?\d+\.\d+[,;:.]?")

# Overlap (Jaccard of the texts holding them) above which two boilerplate segments share a writer.
WRITER_LINK_JACCARD = 0.7
# Words per template phrase (a run of a template sentence whose other fields vary).
PHRASE_WORDS = 4
# A template phrase at least this share of one writer's texts hold is stripped from them all.
WRITER_PHRASE_SHARE = 0.8


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


def _normalised_words(segment: str) -> list[tuple[str, list[int]]]:
    """The words of `normalise_segment(segment)` (the same, token by token), each with the
    indices of the whitespace-separated tokens of `segment` it stands for (a run of fields
    is one ``#``)."""
    out: list[tuple[str, list[int]]] = []
    for i, tok in enumerate(segment.split()):
        if _DIGIT_TOKEN.fullmatch(tok) or (i and tok[:1].isupper()):
            words = ["#"]
        else:
            words = _NON_WORD.sub(" ", tok.lower()).split()
        for w in words:
            if w == "#" and out and out[-1][0] == "#":
                out[-1][1].append(i)
            else:
                out.append((w, [i]))
    return out


def _without_phrases(segment: str, phrases: dict[str, int] | set[str]) -> str:
    """`segment` without the tokens covered by any of the template `phrases` it holds."""
    words = _normalised_words(segment)
    drop: set[int] = set()
    for i in range(len(words) - PHRASE_WORDS + 1):
        if "~" + " ".join(w for w, _ in words[i:i + PHRASE_WORDS]) in phrases:
            drop.update(t for _, tokens in words[i:i + PHRASE_WORDS] for t in tokens)
    if not drop:
        return segment
    # A measurement filled into the template (a speed, a distance: a decimal number) stays;
    # identifiers, dates and names go with the template's words.
    return " ".join(t for i, t in enumerate(segment.split()) if i not in drop or _MEASUREMENT.fullmatch(t))


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
    if any(k.startswith("~") for k in boilerplate):  # a writer's template phrases inside sentences
        kept = [r for r in (_without_phrases(s, boilerplate) for s in kept) if _NON_WORD.sub("", r)]
    if not kept and segs:
        rarest = min(boilerplate.get(k, 0) for k in keys)
        kept = [s for s, k in zip(segs, keys) if boilerplate.get(k, 0) == rarest]
    return " ".join(" ".join(kept).split()) if kept else " ".join(text.split())


def template_phrases(text: str, n: int = PHRASE_WORDS) -> set[str]:
    """The normalised `n`-word phrases of `text`'s segments (fields masked as in
    `normalise_segment`), marked so they never equal a whole segment."""
    return {p for s in split_segments(text) for p in _phrases_of(normalise_segment(s), n)}


def _phrases_of(normalised: str, n: int = PHRASE_WORDS) -> set[str]:
    words = normalised.split()
    return {"~" + " ".join(words[i:i + n]) for i in range(len(words) - n + 1)}


def find_template_phrases(texts: Sequence[str], min_share: float, min_count: int = 3) -> dict[str, int]:
    """Normalised phrases (`template_phrases`) in at least `min_share` of `texts` but not in
    nearly all of them (above 1 - `min_share`: shared by every writer, they tell none apart)."""
    df: Counter[str] = Counter()
    for t in texts:
        df.update(template_phrases(t))
    need = max(min_count, int(np.ceil(min_share * len(texts))))
    cap = max(need, int((1.0 - min_share) * len(texts)))
    return {s: n for s, n in df.items() if need <= n <= cap}


def writer_groups(texts: Sequence[str], boilerplate: set[str] | dict[str, int], min_size: int = 2,
                  phrases: set[str] | dict[str, int] | None = None) -> np.ndarray:
    """A writer id per text (0..g-1; -1 when it carries no boilerplate of a found writer).

    The writer's marks are its boilerplate segments and, when given, its template
    `phrases` (`find_template_phrases`: word runs of a template whose other fields vary
    from report to report, e.g. "on # at # a # operating in autonomous mode"). Marks are
    linked when the texts holding them overlap (Jaccard >= WRITER_LINK_JACCARD). A linked
    set of phrases alone that sits in one sentence of a typical text is a sentence form
    of one writer, not a writer's template, and is ignored. The linked sets are writers. Each
    text joins the writer whose marks it holds most of (ties: the larger writer). Writers
    with fewer than `min_size` texts are dropped (their texts get -1).
    """
    segs = sorted(boilerplate) + sorted(phrases or ())
    if not segs:
        return np.full(len(texts), -1, dtype=int)
    index = {s: i for i, s in enumerate(segs)}
    holds = np.zeros((len(texts), len(segs)), dtype=bool)
    where: list[dict[int, set[int]]] = []  # per text: mark → the text's segments holding it
    for r, t in enumerate(texts):
        found: dict[int, set[int]] = {}
        for k, s in enumerate(split_segments(t)):
            norm = normalise_segment(s)
            for m in {norm} | (_phrases_of(norm) if phrases else set()):
                j = index.get(m)
                if j is not None:
                    holds[r, j] = True
                    found.setdefault(j, set()).add(k)
        where.append(found)
    counts = holds.sum(axis=0).astype(float)
    inter = holds.T.astype(np.float32) @ holds.astype(np.float32)  # exact: counts below 2**24
    jaccard = inter / np.maximum(counts[:, None] + counts[None, :] - inter, 1.0)
    parent = list(range(len(segs)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b in zip(*np.nonzero(np.triu(jaccard >= WRITER_LINK_JACCARD, k=1))):
        parent[find(int(a))] = find(int(b))
    if phrases:
        _drop_single_sentence_sets(holds, parent, find, where, n_segments=len(boilerplate))
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


def _drop_single_sentence_sets(holds: np.ndarray, parent: list[int], find: Callable[[int], int],
                               where: list[dict[int, set[int]]], n_segments: int) -> None:
    """Unmark sets of template phrases that sit in one sentence of a typical text and hold no
    whole boilerplate segment: one writer's sentence forms ("X. Likely cause: Y."), not a
    writer's template, which fills a header, a closing or several sentences."""
    comps: dict[int, list[int]] = {}
    for j in range(holds.shape[1]):
        comps.setdefault(find(j), []).append(j)
    for marks in comps.values():
        if any(j < n_segments for j in marks):
            continue  # a whole segment many texts repeat: boilerplate, as without phrases
        rows = np.flatnonzero(holds[:, marks].any(axis=1))
        spread = [len(set().union(*(where[r].get(j, set()) for j in marks))) for r in rows]
        if not spread or float(np.median(spread)) < 2:
            for j in marks:
                holds[:, j] = False


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
    writers_from: str = "boilerplate"  # "column": the source named each text's writer; "reports":
    # found in the reports a model read (failtax/reading.py), whose answers are the texts
    unmarked: int = 0  # texts without any writer's marks, grouped as one more writer (0: none)
    sentence_texts: list[str] = field(default_factory=list)  # only whole boilerplate segments stripped

    @property
    def writers(self) -> int:
        return len(set(self.groups[self.groups >= 0].tolist()))

    def notes(self) -> dict[str, Any]:
        sizes = Counter(self.groups.tolist())
        top = sorted(self.boilerplate.items(), key=lambda kv: (-kv[1], kv[0]))[:10]
        phrases = sum(k.startswith("~") for k in self.boilerplate)
        return {
            "boilerplate_segments": len(self.boilerplate) - phrases,
            "template_phrases": phrases,
            "boilerplate_examples": [s for s, _ in top],
            "texts_stripped": self.stripped_texts,
            "writers": self.writers,
            "writers_from": self.writers_from,
            "writer_sizes": [sizes[g] for g in range(self.writers)],
            "texts_without_writer": sizes.get(-1, 0),
            "unmarked_writer_texts": self.unmarked,
            "centred": self.writers >= 2,
        }


def writer_template_phrases(texts: Sequence[str], groups: np.ndarray, candidates: dict[str, int],
                            min_share: float = WRITER_PHRASE_SHARE) -> dict[str, int]:
    """The `candidates` phrases that at least `min_share` of one writer's texts hold (its
    template inside the content sentences), with the number of texts holding each."""
    if not candidates or not (groups >= 0).any():
        return {}
    out: dict[str, int] = {}
    for g in sorted(set(groups[groups >= 0].tolist())):
        rows = np.flatnonzero(groups == g)
        df: Counter[str] = Counter()
        for r in rows:
            df.update(template_phrases(texts[r]) & candidates.keys())
        out.update({p: candidates[p] for p, n in df.items() if n >= min_share * len(rows)})
    return out


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
                writers: Sequence[str | None] | None = None, phrases: bool = True) -> WriterView:
    """Strip boilerplate from `texts` and find their writers (see module docstring).

    `writers` (one name or None per text, from a column the user named) replaces the
    writers inferred from boilerplate when it names any; boilerplate is stripped either way.
    """
    boiler = find_boilerplate(texts, min_share)
    min_size = max(2, int(np.ceil(min_writer_share * len(texts))))
    named = writers is not None and any(writers)
    candidates = find_template_phrases(texts, min_share) if phrases else {}
    groups = (known_writer_groups(writers, min_size) if named
              else writer_groups(texts, boiler, min_size=min_size, phrases=candidates))
    sentences = [strip_boilerplate(t, boiler) for t in texts]
    template = writer_template_phrases(texts, groups, candidates)
    boiler = {**boiler, **template}
    stripped = [strip_boilerplate(t, boiler) for t in texts] if template else sentences
    unmarked = 0
    if not named and (groups >= 0).any() and (groups < 0).sum() >= min_size:
        # The reports that carry no writer's marks are a writer of their own (one that keeps
        # no template, or several such): centred on their own mean, not on everyone's.
        unmarked = int((groups < 0).sum())
        groups = np.where(groups < 0, groups.max() + 1, groups)
    changed = sum(a != " ".join(b.split()) for a, b in zip(stripped, texts))
    return WriterView(stripped, groups, boiler, changed, "column" if named else "boilerplate", unmarked,
                      sentence_texts=sentences)
