"""Detect degenerate model output: empty, repetitive, or the input copied back.

Small models (the 135M embedded default) produce all three; the pipeline
records them (Explanation.degenerate, counted in summaries) instead of letting
them pass as explanations. Pure functions, no model.

    >>> detect_degenerate("the robot the robot the robot the robot the robot the robot")
    ['repetition']
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_WORD = re.compile(r"[a-z0-9]+(?:[.'][a-z0-9]+)*")

EMPTY = "empty"
REPETITION = "repetition"
COPIED_INPUT = "copied_input"
TRUNCATED = "truncated"


def words(text: str) -> list[str]:
    """Lower-case word tokens (numbers kept, punctuation dropped)."""
    return _WORD.findall(text.lower())


def _ngrams(tokens: list[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def is_repetitive(
    text: str, *, n: int = 3, min_words: int = 9, max_duplicate_share: float = 0.5
) -> bool:
    """True when more than `max_duplicate_share` of the word n-grams are repeats,
    or one word makes up over half of a text of `min_words` or more."""
    tokens = words(text)
    if len(tokens) < min_words:
        return False
    grams = _ngrams(tokens, n)
    duplicate_share = 1.0 - len(set(grams)) / len(grams)
    top_word_share = max(tokens.count(t) for t in set(tokens)) / len(tokens)
    return duplicate_share > max_duplicate_share or top_word_share > 0.5


def copied_share(text: str, sources: Iterable[str], *, n: int = 6) -> float:
    """Share of the output's word n-grams that appear verbatim in any source text."""
    tokens = words(text)
    grams = _ngrams(tokens, n)
    if not grams:
        return 0.0
    seen: set[tuple[str, ...]] = set()
    for s in sources:
        seen.update(_ngrams(words(s), n))
    return sum(g in seen for g in grams) / len(grams)


def detect_degenerate(
    text: str,
    *,
    sources: Iterable[str] = (),
    finish_reason: str | None = None,
    copied_threshold: float = 0.6,
) -> list[str]:
    """Flags for one model-written string.

    Args:
        text: the model's output (one field or fields joined).
        sources: the input texts a copy would come from (prompt, scene descriptions).
        finish_reason: the backend's finish reason; "length" means the output was cut.
        copied_threshold: share of copied 6-grams from which the output counts as a copy.

    Returns:
        A sorted subset of ["copied_input", "empty", "repetition", "truncated"].
    """
    flags: set[str] = set()
    if len(words(text)) < 2:
        flags.add(EMPTY)
    if is_repetitive(text):
        flags.add(REPETITION)
    if copied_share(text, sources) >= copied_threshold:
        flags.add(COPIED_INPUT)
    if finish_reason == "length":
        flags.add(TRUNCATED)
    return sorted(flags)
