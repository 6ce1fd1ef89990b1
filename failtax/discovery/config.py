"""Configuration of taxonomy discovery (both strategies)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from common import StrictModel
from failtax.embedding import EmbeddingConfig

STRATEGIES = ("cluster-then-name", "ensemble")


class DiscoveryConfig(StrictModel):
    """How failure explanations become a taxonomy of failure modes."""

    # "cluster-then-name" (embeddings cluster, the model names; CPU default) or "ensemble" (the paper)
    strategy: Literal["cluster-then-name", "ensemble"] = "cluster-then-name"
    # fix the number of modes; None = choose within [min_modes, max_modes]
    num_modes: int | None = Field(None, ge=1)
    # fewest modes when choosing (silhouette search; merging never goes below it)
    min_modes: int = Field(3, ge=1)
    # most modes when choosing (also the ensemble's cap per taxonomy)
    max_modes: int = Field(10, ge=1)
    # seed for sampling, clustering and model calls
    seed: int = 0
    # text embedder used for clustering, merging and fallbacks
    embedding: EmbeddingConfig = Field(default_factory=EmbeddingConfig)
    # embed/cluster "trajectory + failure_reason" instead of the failure reason alone
    include_trajectory: bool = False
    # --- writer invariance (failtax/discovery/writers.py): reports from several writers cluster by
    # writer (template, boilerplate, vocabulary) unless their boilerplate is stripped and each writer's
    # mean removed. "auto": on for `given` explanations (human reports), off for model-written ones
    writer_invariance: Literal["auto", "on", "off"] = "auto"
    # a segment (line/sentence, digits normalised) in at least this share of texts is boilerplate
    boilerplate_min_share: float = Field(0.1, gt=0.0, le=1.0)
    # a writer found from boilerplate needs at least this share of texts to be centred on its own
    writer_min_share: float = Field(0.03, ge=0.0, le=1.0)
    # a cluster with at least this share of its reports from one writer is merged into its nearest
    # cluster after the search for k (a cause several writers meet shows up in several); 1.0 = never
    single_writer_share: float = Field(0.9, gt=0.0, le=1.0)
    # --- what the model may write (every string capped: small models run away otherwise)
    # characters of a mode name
    name_max_chars: int = Field(48, ge=8)
    # a name with more words than this reads as a sentence and falls back to keywords
    name_max_words: int = Field(6, ge=1)
    # characters of a mode description
    description_max_chars: int = Field(160, ge=20)
    # keywords per mode
    max_keywords: int = Field(5, ge=1)
    # characters per keyword
    keyword_max_chars: int = Field(24, ge=4)
    # sampling temperature of discovery calls (0 = greedy)
    temperature: float = Field(0.0, ge=0.0)
    # discovery calls in flight at once
    concurrency: int = Field(4, ge=1)
    # the model's context window in tokens; batches and the review call are sized to fit it.
    # Left unset, a pipeline takes it from the backend's recipe (1.5B: 8192, SmolLM2-135M: 4096)
    context_tokens: int = Field(4096, ge=512)
    # conservative characters per token for budgeting prompts without the tokenizer
    chars_per_token: float = Field(3.0, gt=0.5)
    # --- cluster-then-name
    # what is clustered: "hybrid" (MiniLM ⊕ TF-IDF/SVD of content words), "embedding", "lexical".
    # hybrid: sentence embeddings alone group explanations by phrasing more than by cause
    # (benchmarks/discovery_bench.py); the lexical half keeps the objects named apart.
    features: Literal["hybrid", "embedding", "lexical"] = "hybrid"
    # dimensions of the lexical (TF-IDF → truncated SVD) half
    lexical_dims: int = Field(64, ge=2)
    # clustering of the features: "kmeans" or "agglomerative" (ward, fit on a sample)
    clustering: Literal["kmeans", "agglomerative"] = "kmeans"
    # explanations scored per silhouette evaluation (sampled, seeded)
    silhouette_sample_size: int = Field(2000, ge=50)
    # agglomerative clustering is fit on at most this many points; the rest join the nearest centroid
    agglomerative_max_points: int = Field(3000, ge=10)
    # explanations shown to the model per cluster (nearest the centroid first, then spread)
    samples_per_cluster: int = Field(8, ge=1)
    # characters kept of each sample shown to the model
    sample_max_chars: int = Field(200, ge=20)
    # nearest other clusters shown for contrast
    neighbour_clusters: int = Field(2, ge=0)
    # samples shown per neighbour cluster
    neighbour_samples: int = Field(2, ge=0)
    # the model reviews the clusters in one call: merges the ones that share a cause and names
    # the modes (the grouping becomes the model's decision; code only proposes the clusters).
    # Off by default: measured with the 1.5B model (docs/JUDGEMENT.md) its review put every
    # cluster in one mode in 5 of 6 runs (rejected), and where it was used it cost cause agreement
    refine: bool = False
    # examples shown per cluster in the review call
    refine_samples: int = Field(3, ge=1)
    # merge two modes whose "name: description" embeddings are at least this similar
    # (modes the model named are never merged on wording: it named them apart)
    merge_name_similarity: float = Field(0.9, ge=0.0, le=1.0)
    # two model-written names this similar (sentence embeddings of the names alone) are alike:
    # the smaller cluster is asked to set itself apart ("Rotation Failure" / "Rotational
    # Failure": 0.88 with MiniLM; "Head-on Collision" / "... with Narrow Obstacle": 0.78)
    alike_name_similarity: float = Field(0.85, ge=0.0, le=1.0)
    # merge two clusters whose centroids are at least this similar
    merge_centroid_similarity: float = Field(0.95, ge=0.0, le=1.0)
    # False: no model calls, names and descriptions from keywords and exemplars only
    use_model_names: bool = True
    # --- prompts (files in failtax/prompts/ or paths)
    seed_prompt: str = "discover_seed.txt"
    rephrase_prompt: str = "discover_rephrase.txt"
    aggregate_prompt: str = "discover_aggregate.txt"
    name_prompt: str = "name_cluster.txt"
    refine_prompt: str = "refine_clusters.txt"
    # --- ensemble
    # extra ensemble members (instruction files) used before model-written rephrasings
    ensemble_prompts: list[str] = Field(default_factory=list)
    # ensemble members besides the seed prompt (the paper: >= 3, written by the model)
    num_rephrasings: int = Field(3, ge=0)
    # temperature of the rephrasing calls (diversity is the point)
    rephrase_temperature: float = Field(0.7, ge=0.0)
    # tries per rephrasing before the seed instructions stand in (recorded)
    rephrase_attempts: int = Field(2, ge=1)
    # explanations each ensemble member sees (seeded sample per member; 0 = all)
    max_explanations_per_candidate: int = Field(1000, ge=0)

    @model_validator(mode="after")
    def _check(self) -> DiscoveryConfig:
        if self.min_modes > self.max_modes:
            raise ValueError(
                f"discovery.min_modes={self.min_modes} > max_modes={self.max_modes}; set min_modes <= max_modes"
            )
        if self.num_modes is not None and self.num_modes > self.max_modes:
            raise ValueError(
                f"discovery.num_modes={self.num_modes} exceeds max_modes={self.max_modes}; raise max_modes"
            )
        if self.taxonomy_max_tokens() > self.context_tokens // 2:
            raise ValueError(
                f"a taxonomy of {self.max_modes} modes needs ~{self.taxonomy_max_tokens()} output tokens, over half "
                f"of context_tokens={self.context_tokens}; lower max_modes or the *_max_chars caps"
            )
        return self

    def mode_max_tokens(self, chars_per_token: float | None = None) -> int:
        """Completion tokens that cover one mode object at its caps
        (`chars_per_token=1` gives the worst case, a token per character)."""
        chars = self.name_max_chars + self.description_max_chars
        chars += self.max_keywords * (self.keyword_max_chars + 3) + 60  # quotes, keys, punctuation
        return int(chars / (chars_per_token or self.chars_per_token)) + 8

    def taxonomy_max_tokens(self) -> int:
        """Completion tokens that cover a whole taxonomy at its caps."""
        return self.mode_max_tokens() * self.max_modes + 32

    @property
    def target_modes(self) -> tuple[int, int]:
        """(fewest, most) modes the result may have."""
        if self.num_modes is not None:
            return self.num_modes, self.num_modes
        return self.min_modes, self.max_modes
