"""Pieces both discovery strategies share: prompts, guarded (typed) model
calls, degenerate-name checks, c-TF-IDF keywords and near-duplicate merging.

Everything a model writes passes `check_name` / `check_description` before it
becomes part of a taxonomy; what fails falls back to code (keywords of the
explanations behind the mode) and is counted, so a report can say which parts
a model decided.
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ValidationError

from failtax.answers import answer_schema
from failtax.degenerate import copied_share, is_repetitive, words
from failtax.discovery.writers import WriterView, strip_boilerplate, writer_view
from failtax.embedding import make_text_embedder
from failtax.types import OUTLIER, Explanation, Mode
from serving.protocol import BackendError, CallResult, LLMBackend

PROMPTS_DIR = Path(__file__).resolve().parent.parent / "prompts"

# Names that say nothing about a failure; a model answering with one gets the keyword name.
# a name in a writer's own voice ("Our knees", "My bot") names who wrote, not what happened
FIRST_PERSON = frozenset({"i", "me", "my", "mine", "we", "us", "our", "ours"})
GENERIC_NAMES = frozenset(
    {"", "failure", "failures", "failure mode", "robot failure", "robot failures", "mode", "cluster",
     "other", "others", "misc", "miscellaneous", "unknown", "none", "n/a", "name", "category", OUTLIER}
)
# Words that only say that something went wrong: a name made of these alone (with the
# domain stop words below) is generic too, e.g. "Fatal Failure" or "FatalError".
FAILURE_WORDS = frozenset(
    {"fatal", "error", "errors", "fault", "faults", "issue", "issues", "problem", "problems", "bug",
     "exception", "critical", "severe", "general", "unexpected", "event", "incident", "accident",
     "mishap", "type", "types", "case", "cases", "failure", "failures", "mode", "modes"}
)
# Words that only say that something was hit: "Obstacle Collision" names no cause either.
THING_WORDS = frozenset(
    {"obstacle", "obstacles", "object", "objects", "thing", "things", "something", "contact",
     "contacts", "impact", "impacts", "bump", "bumped", "unnamed", "unknown", "unidentified", "hazard",
     "hazards", "danger", "dangers"}
)
# Words of the answer's own format that small models echo as keywords ("json").
ANSWER_WORDS = frozenset({"json", "name", "names", "description", "descriptions", "keyword", "keywords",
                          "explanation", "explanations", "group", "groups", "cluster", "clusters"})
# Words never used as keywords: they are in almost every robot failure explanation.
DOMAIN_STOP_WORDS = frozenset(
    {"robot", "robots", "failure", "failed", "fails", "fail", "episode", "frame", "frames", "camera", "likely",
     "hit", "hits", "collided", "collide", "collides", "collision", "crashed", "crash", "crashes", "avoid",
     "cause", "caused", "reason", "probably", "possibly", "then", "because", "since", "while"}
)


def lexical_features(texts: Sequence[str], dims: int, seed: int = 0) -> np.ndarray:
    """L2-normalised TF-IDF of content words (English and domain stop words
    removed, sublinear TF) reduced by truncated SVD to at most `dims` columns."""
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS, TfidfVectorizer

    stop = list(ENGLISH_STOP_WORDS | DOMAIN_STOP_WORDS)
    vec = TfidfVectorizer(stop_words=stop, sublinear_tf=True, min_df=2 if len(texts) >= 50 else 1,
                          token_pattern=r"(?u)\b[a-zA-Z][a-zA-Z]+\b")
    try:
        t = vec.fit_transform(texts)
    except ValueError:  # no content words at all
        return np.zeros((len(texts), 1), dtype=np.float32)
    k = min(dims, t.shape[1] - 1, len(texts) - 1)
    z = TruncatedSVD(k, random_state=seed % (2**31)).fit_transform(t) if k >= 2 else t.toarray()
    z = np.asarray(z, dtype=np.float32)
    return z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)


def load_prompt(name: str) -> str:
    """A prompt file from failtax/prompts/ (or a path to one).

    Raises:
        ValueError: the file does not exist (names the folder searched).
    """
    path = Path(name).expanduser()
    if not path.is_file():
        path = PROMPTS_DIR / name
    if not path.is_file():
        raise ValueError(f"prompt file {name!r} not found (looked in {PROMPTS_DIR}); fix discovery.*_prompt")
    return path.read_text(encoding="utf-8")


def fill(template: str, **values: Any) -> str:
    """Replace `{name}` placeholders; braces of any other kind are left alone
    (prompts quote JSON), and a missing value is an error naming it."""

    def sub(m: re.Match[str]) -> str:
        key = m.group(1)
        if key not in values:
            raise KeyError(f"prompt placeholder {{{key}}} has no value")
        return str(values[key])

    return re.sub(r"\{([a-z_][a-z0-9_]*)\}", sub, template)


def explanation_text(e: Explanation, include_trajectory: bool = False) -> str:
    """The text that stands for one explanation in clustering and prompts."""
    reason = " ".join(e.failure_reason.split())
    if include_trajectory and e.trajectory.strip():
        return f"{' '.join(e.trajectory.split())} {reason}".strip()
    return reason


def clip(text: str, max_chars: int) -> str:
    """`text` on one line, cut at a word boundary to at most `max_chars`."""
    text = " ".join(str(text).split())
    if len(text) <= max_chars:
        return text
    cut = text[: max_chars - 1].rsplit(" ", 1)[0]
    return cut + "…"


# --------------------------------------------------------------------------- guarded calls


@dataclass
class CallLog:
    """What the model calls of one stage cost and how they went."""

    calls: int = 0  # calls answered (cached or not)
    cached: int = 0  # of those, answered from the call cache
    prompt_tokens: int = 0
    completion_tokens: int = 0
    call_ids: list[str] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)  # typed failures: kind, purpose, detail
    degenerate: Counter = field(default_factory=Counter)  # flag -> count

    def record(self, result: CallResult) -> None:
        self.calls += 1
        self.cached += int(result.cached)
        self.prompt_tokens += result.usage.prompt_tokens
        self.completion_tokens += result.usage.completion_tokens
        self.call_ids.append(result.call_id)

    def error(self, kind: str, purpose: str, detail: str, **extra: Any) -> None:
        self.errors.append({"stage": "discover", "kind": kind, "purpose": purpose, "message": detail[:500], **extra})

    def summary(self) -> dict[str, Any]:
        kinds = Counter(e["kind"] for e in self.errors)
        return {
            "calls": self.calls,
            "cached_calls": self.cached,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "errors": dict(sorted(kinds.items())),
            "degenerate": dict(sorted(self.degenerate.items())),
        }


async def call_json(
    backend: LLMBackend,
    prompt: str,
    answer: type[BaseModel],
    *,
    max_tokens: int,
    temperature: float,
    seed: int,
    purpose: str,
    call_log: CallLog,
    limiter: asyncio.Semaphore | None = None,
) -> tuple[Any | None, CallResult | None]:
    """One structured call that never raises for model trouble.

    The schema sent is generated from the typed `answer` (failtax.answers), and
    the answer is validated with the same model.

    Returns (parsed, result): parsed is the validated answer as a dict, or None
    when the server was unreachable (`backend_error`), the output did not
    validate (`parse_error`) or was cut (`truncated`); each is recorded in
    `call_log.errors`.
    """
    messages = [{"role": "user", "content": prompt}]
    schema = answer_schema(answer)
    try:
        if limiter is None:
            result = await backend.complete_json(
                messages, schema, max_tokens=max_tokens, temperature=temperature, seed=seed
            )
        else:
            async with limiter:
                result = await backend.complete_json(
                    messages, schema, max_tokens=max_tokens, temperature=temperature, seed=seed
                )
    except BackendError as e:
        call_log.error("backend_error", purpose, str(e))
        return None, None
    call_log.record(result)
    if result.parsed is None:
        kind = "truncated" if result.finish_reason == "length" else "parse_error"
        call_log.error(kind, purpose, result.error or result.text[:200], call_id=result.call_id)
        return None, result
    try:
        return answer.model_validate(result.parsed).model_dump(), result
    except ValidationError as e:
        call_log.error("parse_error", purpose, f"answer does not match the schema: {e}", call_id=result.call_id)
        return None, result


# --------------------------------------------------------------------------- degenerate names


def normalise_name(name: str) -> str:
    return " ".join(words(name))


def check_name(
    name: str, *, sources: Sequence[str], taken: set[str], max_words: int, prompt: str = ""
) -> list[str]:
    """Why a model-written mode name is unusable ([] when it is fine).

    Flags: empty, generic, sentence (too many words or sentence punctuation),
    repetition, copied_input (a long name lifted from an explanation),
    copied_prompt (words lifted from the prompt's own instructions, such as
    "Merge" or "Frequent words"), first_person ("Our Obstacle Damage": a writer's
    voice, not a cause), duplicate (another mode already has it).
    """
    flags: list[str] = []
    norm = normalise_name(name)
    toks = norm.split()
    if not toks:
        return ["empty"]
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    spaced = re.sub(r"([a-z])([A-Z])", r"\1 \2", name).replace("'", " ")  # FatalError -> fatal error
    content = [t for t in words(spaced) if len(t) > 1 and t not in ENGLISH_STOP_WORDS]
    if norm in GENERIC_NAMES or all(t in FAILURE_WORDS or t in DOMAIN_STOP_WORDS or t in THING_WORDS for t in content):
        flags.append("generic")
    if prompt and len(toks) <= 6 and f" {norm} " in f" {normalise_name(prompt)} ":
        flags.append("copied_prompt")
    if FIRST_PERSON & set(toks):
        flags.append("first_person")
    stripped = name.strip()
    if len(toks) > max_words or (stripped.endswith(".") and len(toks) > 2) or stripped.count(",") >= 2:
        flags.append("sentence")
    if len(toks) >= 4 and (is_repetitive(name, min_words=4) or len(set(toks)) <= len(toks) // 2):
        flags.append("repetition")
    if len(toks) >= 4 and copied_share(name, sources, n=4) >= 0.99:
        flags.append("copied_input")
    if norm in taken:
        flags.append("duplicate")
    return flags


def check_description(text: str, *, sources: Sequence[str], prompt: str = "") -> list[str]:
    """Why a model-written description is unusable ([] when it is fine)."""
    toks = words(text)
    if len(toks) < 2:
        return ["empty"]
    flags = []
    if prompt and len(toks) <= 6 and f" {' '.join(toks)} " in f" {normalise_name(prompt)} ":
        flags.append("copied_prompt")  # e.g. "Frequent words", a heading of the prompt
    if is_repetitive(text, min_words=6):
        flags.append("repetition")
    if copied_share(text, sources, n=6) >= 0.6:
        flags.append("copied_input")
    return flags


def clean_keywords(raw: Any, *, max_keywords: int, max_chars: int) -> list[str]:
    """Model keywords: strings only, trimmed, de-duplicated, capped."""
    out: list[str] = []
    seen: set[str] = set()
    for k in raw if isinstance(raw, list) else []:
        if not isinstance(k, str):
            continue
        norm = normalise_name(k)
        if not norm or norm in seen or len(norm) > max_chars or norm in GENERIC_NAMES or norm in ANSWER_WORDS:
            continue
        seen.add(norm)
        out.append(norm)
        if len(out) >= max_keywords:
            break
    return out


# --------------------------------------------------------------------------- keywords


def ctfidf_keywords(texts: Sequence[str], labels: Sequence[int], top_n: int) -> dict[int, list[str]]:
    """Class-based TF-IDF keywords per label (BERTopic's c-TF-IDF):
    weight(t, c) = tf(t, c) / |c| * log(1 + A / f(t)), A = mean words per class.

    Bigrams win over the unigrams they contain; labels < 0 are ignored.
    """
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS, CountVectorizer

    labels = np.asarray(labels)
    classes = sorted(int(c) for c in set(labels.tolist()) if c >= 0)
    if not classes:
        return {}
    docs = [" . ".join(texts[i] for i in np.flatnonzero(labels == c)) for c in classes]
    stop = ENGLISH_STOP_WORDS | DOMAIN_STOP_WORDS

    def phrases(doc: str) -> list[str]:
        # Unigrams and bigrams of adjacent content words: a bigram never spans
        # punctuation or a removed stop word ("surroundings): hit head" is no term).
        out: list[str] = []
        prev: str | None = None
        for tok in re.findall(r"[a-z]+|[^\sa-z]", doc.lower()):
            if len(tok) < 2 or not tok.isalpha() or tok in stop:
                prev = None
                continue
            out.append(tok)
            if prev is not None:
                out.append(f"{prev} {tok}")
            prev = tok
        return out

    vec = CountVectorizer(analyzer=phrases)
    try:
        counts = vec.fit_transform(docs).toarray().astype(np.float64)
    except ValueError:  # every word was a stop word
        return {c: [] for c in classes}
    terms = vec.get_feature_names_out()
    tf = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1.0)
    avg_words = counts.sum() / len(classes)
    idf = np.log(1.0 + avg_words / np.maximum(counts.sum(axis=0), 1.0))
    weights = tf * idf
    out: dict[int, list[str]] = {}
    for row, c in enumerate(classes):
        chosen: list[str] = []
        for j in np.argsort(-weights[row]):
            if weights[row, j] <= 0 or len(chosen) >= top_n:
                break
            term = str(terms[j])
            if any(term in k.split() or k in term.split() for k in chosen if " " in k or " " in term):
                continue
            chosen.append(term)
        out[c] = chosen
    return out


def keyword_name(keywords: Sequence[str], max_chars: int, fallback: str) -> str:
    """A mode name made of its top keywords ("glass door / transparent")."""
    name = ""
    for k in keywords[:3]:
        cand = f"{name} / {k}" if name else k
        if len(cand) > max_chars:
            break
        name = cand
    return name or fallback


def keyword_description(keywords: Sequence[str], exemplar: str, max_chars: int) -> str:
    """A code-written description: the keywords and the most typical explanation."""
    head = f"Failures mentioning {', '.join(keywords[:4])}" if keywords else "Failures like"
    return clip(f'{head}; e.g. "{exemplar}"', max_chars)


# --------------------------------------------------------------------------- merging


def group_by_similarity(sims: np.ndarray, threshold: float, *, min_groups: int = 1) -> list[list[int]]:
    """Single-link grouping on a similarity matrix: join the most similar pair
    of items first, while its similarity is >= `threshold` and more than
    `min_groups` groups remain. Returns lists of indices, each ascending."""
    n = len(sims)
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    pairs = sorted(
        ((float(sims[i, j]), i, j) for i in range(n) for j in range(i + 1, n) if sims[i, j] >= threshold),
        reverse=True,
    )
    count = n
    for _, i, j in pairs:
        if count <= min_groups:
            break
        ri, rj = find(i), find(j)
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)
            count -= 1
    by_root: dict[int, list[int]] = {}
    for i in range(n):
        by_root.setdefault(find(i), []).append(i)
    return list(by_root.values())


def mode_text(mode: Mode) -> str:
    """The text that stands for a mode when it is embedded."""
    kws = ", ".join(mode.keywords[:5])
    return f"{mode.name}: {mode.description}" + (f" ({kws})" if kws else "")


def rounded(vec: np.ndarray, digits: int = 5) -> list[float]:
    return [round(float(x), digits) for x in vec]


class StrategyBase:
    """What both discovery strategies hold: their config, a lazily built text
    embedder (MiniLM unless one is injected) and the log of their model calls."""

    name = ""

    def __init__(self, cfg: Any, embedder: Any = None) -> None:
        self.cfg = cfg
        self._embedder = embedder
        self.call_log = CallLog()

    @property
    def embedder(self) -> Any:
        if self._embedder is None:
            self._embedder = make_text_embedder(self.cfg.embedding)
        return self._embedder

    def writer_view(self, kept: list[Explanation]) -> WriterView | None:
        """Boilerplate-stripped texts and writers (None when writer invariance is off:
        `auto` turns it on when most explanations are `given`, i.e. written by people)."""
        cfg = self.cfg
        by_people = sum(e.input_mode in ("given", "report") for e in kept)
        on = cfg.writer_invariance == "on" or (cfg.writer_invariance == "auto" and by_people * 2 > len(kept))
        if not on:
            return None
        raw = [f"{e.trajectory}\n{e.failure_reason}" if cfg.include_trajectory and e.trajectory.strip()
               else e.failure_reason for e in kept]
        if not any(e.report for e in kept):
            return writer_view(raw, min_share=cfg.boilerplate_min_share, min_writer_share=cfg.writer_min_share,
                               writers=[e.writer for e in kept])
        # The model read the reports (failtax/reading.py): its answers are clustered as they are,
        # and the writers are found in the reports it read, whose boilerplate marks them.
        found = writer_view([e.report or t for e, t in zip(kept, raw)], min_share=cfg.boilerplate_min_share,
                            min_writer_share=cfg.writer_min_share, writers=[e.writer for e in kept])
        texts = [t if e.report else s for e, t, s in zip(kept, raw, found.texts)]
        return replace(found, texts=texts, sentence_texts=texts,
                       stripped_texts=sum(not e.report and t != s for e, t, s in zip(kept, raw, found.texts)),
                       writers_from="column" if found.writers_from == "column" else "reports")

    @staticmethod
    def note_writer_view(notes: dict[str, Any], view: WriterView | None, n_texts: int, *, centred: bool) -> None:
        """Record in a taxonomy's notes what writer invariance did, with the boilerplate
        segments assignment strips from the texts it reads (`strip_boilerplate_of`)."""
        if view is None:
            notes["writer_invariance"] = {"used": False}
            return
        notes["writer_invariance"] = {**view.notes(), "used": True, "centred": centred and view.writers >= 2,
                                      "boilerplate": dict(sorted(view.boilerplate.items()))}
        if centred and view.writers >= 2:
            how = (f"features centred per writer ({view.writers} writers, "
                   + ("named by the source's writer column)" if view.writers_from == "column"
                      else "found from boilerplate and template phrases"
                      + (" of the reports the model read" if view.writers_from == "reports" else "")
                      + (f", one of them the {view.unmarked} texts without a template)" if view.unmarked else ")")))
        elif centred:
            how = "one writer found, no centring"
        else:
            how = "the model reads the stripped texts"
        phrases = sum(k.startswith("~") for k in view.boilerplate)
        read = view.writers_from == "reports"
        notes["decided_by"]["writer_invariance"] = (
            f"code: {len(view.boilerplate) - phrases} boilerplate segments"
            + (f" and {phrases} template phrases" if phrases else "")
            + (" found in the reports; the model's answers are clustered as it wrote them"
               + (f" (reports kept as written: {view.stripped_texts} stripped)" if view.stripped_texts else "")
               if read else f" stripped from {view.stripped_texts}/{n_texts} texts")
            + f"; {how}"
        )


def strip_boilerplate_of(text: str, notes: dict[str, Any]) -> str:
    """`text` without the boilerplate the taxonomy's discovery stripped (unchanged when
    writer invariance did not run), so that assignment reads what discovery read."""
    boiler = (notes.get("writer_invariance") or {}).get("boilerplate") or {}
    return strip_boilerplate(text, boiler) if boiler else text

