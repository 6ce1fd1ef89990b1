"""Taxonomy discovery: failure explanations in, a taxonomy of failure modes out.

Two strategies behind one Protocol, both scaling past one context window:

- ``cluster-then-name`` (default on CPU): embeddings cluster the explanations,
  the model only names and describes each cluster (failtax.discovery.cluster_name).
- ``ensemble`` (the paper): a seed clustering prompt plus model-written
  rephrasings, one candidate taxonomy each (map-reduced over context-sized
  batches), merged by an aggregation call (failtax.discovery.ensemble).

    strategy = make_strategy(DiscoveryConfig(strategy="ensemble"))
    taxonomy = await strategy.discover(explanations, backend)

`run_stage` is the pipeline's discover stage (explanations → taxonomy.json).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from common import atomic_write_json, stable_hash
from failtax.discovery.cluster_name import ClusterThenName
from failtax.discovery.config import STRATEGIES, DiscoveryConfig
from failtax.discovery.ensemble import Ensemble
from failtax.embedding import TextEmbedder
from failtax.run_folder import (
    EXPLANATIONS_FILE,
    TAXONOMY_FILE,
    BackendProvider,
    RunFolder,
    Skipped,
    backend_stats,
)
from failtax.types import Explanation, Taxonomy
from serving.protocol import LLMBackend

__all__ = [
    "STRATEGIES",
    "DiscoverResult",
    "DiscoveryConfig",
    "DiscoveryStrategy",
    "make_strategy",
    "retryable_calls",
    "run_stage",
]


@runtime_checkable
class DiscoveryStrategy(Protocol):
    """Turns explanations into a taxonomy."""

    name: str

    async def discover(self, explanations: list[Explanation], backend: LLMBackend) -> Taxonomy:
        """The taxonomy; never raises for model trouble (errors go to `Taxonomy.notes["errors"]`)."""
        ...


def make_strategy(cfg: DiscoveryConfig | None = None, embedder: TextEmbedder | None = None) -> DiscoveryStrategy:
    """Build the strategy named by `cfg.strategy`.

    Args:
        cfg: discovery settings (defaults when None).
        embedder: a text embedder to share (built from `cfg.embedding` when None).

    Raises:
        ValueError: unknown strategy name (lists the valid ones).
    """
    cfg = cfg or DiscoveryConfig()
    if cfg.strategy == "cluster-then-name":
        return ClusterThenName(cfg, embedder)
    if cfg.strategy == "ensemble":
        return Ensemble(cfg, embedder)
    raise ValueError(f"unknown discovery strategy {cfg.strategy!r}; valid: {', '.join(STRATEGIES)}")


@dataclass
class DiscoverResult:
    """What the discover stage did (the run summary's `stages.discover`)."""

    modes: int  # modes in taxonomy.json
    retryable: int = 0  # model calls that failed (server unreachable); a rerun retries them

    def summary(self) -> dict[str, Any]:
        return {"modes": self.modes}


def retryable_calls(taxonomy: Taxonomy) -> int:
    """Discovery calls that failed because the server was unreachable (their part of the
    taxonomy is a fallback: keyword names, code clusters)."""
    if not taxonomy.notes.get("retryable"):
        return 0
    errors = taxonomy.notes.get("errors") or []
    return max(1, sum(1 for e in errors if e.get("kind") == "backend_error"))


async def run_stage(
    run: RunFolder,
    explanations: list[Explanation],
    cfg: DiscoveryConfig,
    backend: BackendProvider,
    *,
    backend_model: str | None,
    seed: int,
) -> DiscoverResult | Skipped:
    """The discover stage: a taxonomy from all explanations → taxonomy.json.

    Skipped when taxonomy.json finished with the same inputs (explanations, config,
    model, seed) and no call failed; a rerun after failed calls redoes the stage,
    where the calls that had finished come back from the call cache.

    Args:
        run: the run folder.
        explanations: the reason stage's output.
        cfg: the stage's config (carrying the run's seed).
        backend: builds the model backend; called only when the strategy uses a model.
        backend_model: the configured model id (part of the input hash).
        seed: the run's seed (part of the input hash).

    Raises:
        ValueError: there are no explanations.
    """
    if not explanations:
        raise ValueError(
            f"{run.path(EXPLANATIONS_FILE)} holds no explanations; nothing to discover from"
        )
    input_hash = stable_hash(
        [[e.to_dict() for e in explanations], cfg.model_dump(mode="json"), backend_model, seed]
    )
    if run.is_done("discover", input_hash, TAXONOMY_FILE):
        reason = "taxonomy.json is up to date"
        run.log_stage("discover", "skip", reason=reason)
        return Skipped(reason)
    run.log_stage("discover", "start", explanations=len(explanations), strategy=cfg.strategy)
    # Cluster-then-name without model names needs no model: do not start a server for it.
    needs_model = cfg.strategy != "cluster-then-name" or cfg.use_model_names
    model = await backend() if needs_model else None
    taxonomy = await make_strategy(cfg).discover(explanations, model)
    atomic_write_json(run.path(TAXONOMY_FILE), taxonomy.to_dict())
    result = DiscoverResult(modes=len(taxonomy.modes), retryable=retryable_calls(taxonomy))
    extra = {"retryable": result.retryable} if result.retryable else {}
    run.log_stage(
        "discover",
        "finish",
        modes=result.modes,
        input_hash=input_hash,
        **extra,
        **backend_stats(model),
    )
    return result
