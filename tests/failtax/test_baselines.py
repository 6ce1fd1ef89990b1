"""The BERTopic baseline and the embedding-similarity assignment baseline produce
the pipeline's own records, so the same metrics apply."""

from __future__ import annotations

import pytest
from synthetic import make_synthetic_explanations

from failtax.baselines import BertopicConfig, bertopic_taxonomy, embedding_similarity_baseline
from failtax.embedding import EmbeddingConfig, make_text_embedder
from failtax.metrics import cluster_metrics
from failtax.types import OUTLIER, Mode, Taxonomy

HASHING = EmbeddingConfig(kind="hashing")


def test_bertopic_records_and_metrics():
    pytest.importorskip("bertopic")
    explanations, labels = make_synthetic_explanations(160, seed=2)
    emb = make_text_embedder(HASHING)
    taxonomy, assignments = bertopic_taxonomy(explanations, BertopicConfig(embedding=HASHING, min_topic_size=8),
                                              embedder=emb)
    assert taxonomy.strategy == "bertopic" and taxonomy.modes
    assert len(assignments) == len(explanations)
    names = set(taxonomy.names) | {OUTLIER}
    assert all(a.modes[0] in names for a in assignments)
    assert all(m.named_by == "keywords" and m.keywords for m in taxonomy.modes)
    assert taxonomy.outlier_count == sum(a.modes == [OUTLIER] for a in assignments)
    assert sum(m.reported_frequency for m in taxonomy.modes) + taxonomy.outlier_count / 160 == pytest.approx(1, 1e-3)
    m = cluster_metrics([labels[a.episode_id].label for a in assignments], [a.modes[0] for a in assignments])
    assert 0.0 <= m["nmi"] <= 1.0


def test_bertopic_rejects_too_few():
    pytest.importorskip("bertopic")
    explanations, _ = make_synthetic_explanations(5, seed=0)
    with pytest.raises(ValueError, match="more than"):
        bertopic_taxonomy(explanations, BertopicConfig(embedding=HASHING))


def test_embedding_similarity_baseline_uses_mode_text_without_floor():
    explanations, _ = make_synthetic_explanations(20, seed=0)
    tax = Taxonomy([Mode("glass", "glass door pane", ["glass"]), Mode("pole", "thin pole post", ["pole"])], "x",
                   notes={"mode_vectors": {"embedder": "hashing-512", "vectors": {"glass": [0.0] * 512,
                                                                                  "pole": [0.0] * 512}}})
    out = embedding_similarity_baseline(explanations, tax, make_text_embedder(HASHING))
    assert all(a.modes[0] in ("glass", "pole") for a in out)  # never outlier, text vectors used
