"""Baselines the paper compares against, producing the pipeline's own records
(Taxonomy, Assignment) so the same metrics apply.

- **BERTopic** (the `bertopic` library): UMAP + HDBSCAN on the local MiniLM
  embeddings, c-TF-IDF keywords per topic; topic -1 is the outlier mode.
  Nothing downloads: the sentence-transformers model is passed in and the
  embeddings are precomputed.
- **Embedding-similarity assignment**: each explanation → the mode with the
  most similar text (`failtax.assignment.embedding_assign`).
"""

from __future__ import annotations

import logging
from typing import Literal

import numpy as np
from pydantic import Field

from common import StrictModel
from failtax.assignment import AssignmentConfig, embedding_assign
from failtax.discovery.common import (
    DOMAIN_STOP_WORDS,
    explanation_text,
    keyword_description,
    keyword_name,
    rounded,
)
from failtax.embedding import EmbeddingConfig, TextEmbedder, make_text_embedder
from failtax.types import OUTLIER, Assignment, Explanation, Mode, Taxonomy

log = logging.getLogger(__name__)

__all__ = ["BertopicConfig", "bertopic_taxonomy", "embedding_similarity_baseline"]


class BertopicConfig(StrictModel):
    """The BERTopic baseline's settings (BERTopic's own defaults where sensible)."""

    embedding: EmbeddingConfig = Field(default_factory=EmbeddingConfig)
    # smallest topic HDBSCAN keeps
    min_topic_size: int = Field(10, ge=2)
    # reduce to this many topics after fitting ("auto" merges similar ones; None keeps all)
    nr_topics: int | Literal["auto"] | None = None
    # UMAP neighbours and output dimensions
    umap_neighbors: int = Field(15, ge=2)
    umap_components: int = Field(5, ge=2)
    # keywords kept per topic
    top_n_words: int = Field(5, ge=1)
    # characters of a keyword-made mode name
    name_max_chars: int = Field(48, ge=8)
    description_max_chars: int = Field(160, ge=20)
    include_trajectory: bool = False
    seed: int = 0


def bertopic_taxonomy(
    explanations: list[Explanation],
    cfg: BertopicConfig | None = None,
    *,
    embedder: TextEmbedder | None = None,
) -> tuple[Taxonomy, list[Assignment]]:
    """Fit BERTopic on the explanations.

    Returns:
        (taxonomy with one keyword-named mode per topic, one assignment per explanation;
        topic -1 → "outlier").

    Raises:
        ImportError: bertopic (or umap-learn / hdbscan) is not installed, with the install hint.
        ValueError: fewer explanations than BERTopic can fit (needs more than umap_neighbors).
    """
    cfg = cfg or BertopicConfig()
    try:
        from bertopic import BERTopic
        from hdbscan import HDBSCAN
        from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS, CountVectorizer
        from umap import UMAP
    except ImportError as e:
        raise ImportError("the BERTopic baseline needs `pip install 'failtax[baselines]'` (bertopic)") from e
    embedder = embedder or make_text_embedder(cfg.embedding)
    texts = [explanation_text(e, cfg.include_trajectory) or "(empty)" for e in explanations]
    if len(texts) <= cfg.umap_neighbors + 1:
        raise ValueError(
            f"BERTopic needs more than {cfg.umap_neighbors + 1} explanations (got {len(texts)}); "
            "lower umap_neighbors or add explanations"
        )
    x = embedder.embed(texts)
    st_model = getattr(embedder, "sentence_transformer", None)
    seed = cfg.seed % (2**31)
    model = BERTopic(
        embedding_model=st_model,
        umap_model=UMAP(n_neighbors=cfg.umap_neighbors, n_components=cfg.umap_components, min_dist=0.0,
                        metric="cosine", random_state=seed),
        hdbscan_model=HDBSCAN(min_cluster_size=cfg.min_topic_size, metric="euclidean",
                              cluster_selection_method="eom", prediction_data=True),
        vectorizer_model=CountVectorizer(stop_words=list(ENGLISH_STOP_WORDS | DOMAIN_STOP_WORDS)),
        top_n_words=cfg.top_n_words,
        nr_topics=cfg.nr_topics,
        calculate_probabilities=False,
        verbose=False,
    )
    topics, _ = model.fit_transform(texts, embeddings=x)
    topics = np.asarray(topics)
    ids = sorted(int(t) for t in set(topics.tolist()) if t >= 0)
    modes: list[Mode] = []
    names: dict[int, str] = {}
    vectors: dict[str, list[float]] = {}
    members: dict[str, list[str]] = {}
    taken: set[str] = set()
    for t in ids:
        words = [w for w, _ in (model.get_topic(t) or [])][: cfg.top_n_words]
        name = keyword_name(words, cfg.name_max_chars, fallback=f"topic {t}")
        if name in taken:
            name = f"{name} ({t})"
        taken.add(name)
        idx = np.flatnonzero(topics == t)
        centroid = x[idx].mean(axis=0)
        exemplar = texts[int(idx[np.argmax(x[idx] @ centroid)])]
        modes.append(Mode(name=name, description=keyword_description(words, exemplar, cfg.description_max_chars),
                          keywords=words, reported_frequency=round(len(idx) / len(texts), 6),
                          named_by="keywords"))
        names[t] = name
        vectors[name] = rounded(centroid)
        members[name] = [explanations[i].episode_id for i in idx]
    assignments = [
        Assignment(e.episode_id, [names.get(int(t), OUTLIER)], "bertopic") for e, t in zip(explanations, topics)
    ]
    taxonomy = Taxonomy(
        modes=modes,
        strategy="bertopic",
        outlier_count=int((topics < 0).sum()),
        notes={
            "embedder": embedder.name,
            "decided_by": {"clusters": "code: UMAP + HDBSCAN (BERTopic)", "names": "keywords (c-TF-IDF)"},
            "mode_vectors": {"embedder": embedder.name, "kind": "centroid", "vectors": vectors},
            "members": members,
        },
    )
    return taxonomy, assignments


def embedding_similarity_baseline(
    explanations: list[Explanation], taxonomy: Taxonomy, embedder: TextEmbedder | None = None
) -> list[Assignment]:
    """The paper's embedding baseline: the mode whose text is most similar
    (mode texts, never cluster centroids, no similarity floor)."""
    cfg = AssignmentConfig(method="embedding", mode_vectors="text", similarity_floor=-1.0)
    return embedding_assign(explanations, taxonomy, embedder or make_text_embedder(cfg.embedding), cfg)
