"""Taxonomy discovery: failure explanations in, a taxonomy of failure modes out.

Two strategies behind one Protocol, both scaling past one context window:

- ``cluster-then-name`` (default on CPU): embeddings cluster the explanations,
  the model only names and describes each cluster (failtax.discovery.cluster_name).
- ``ensemble`` (the paper): a seed clustering prompt plus model-written
  rephrasings, one candidate taxonomy each (map-reduced over context-sized
  batches), merged by an aggregation call (failtax.discovery.ensemble).

    strategy = make_strategy(DiscoveryConfig(strategy="ensemble"))
    taxonomy = await strategy.discover(explanations, backend)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

from failtax.discovery.config import STRATEGIES, DiscoveryConfig

if TYPE_CHECKING:
    from failtax.embedding import TextEmbedder
    from failtax.types import Explanation, Taxonomy
    from serving.protocol import LLMBackend

__all__ = ["STRATEGIES", "DiscoveryConfig", "DiscoveryStrategy", "make_strategy"]


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
        from failtax.discovery.cluster_name import ClusterThenName

        return ClusterThenName(cfg, embedder)
    if cfg.strategy == "ensemble":
        from failtax.discovery.ensemble import Ensemble

        return Ensemble(cfg, embedder)
    raise ValueError(f"unknown discovery strategy {cfg.strategy!r}; valid: {', '.join(STRATEGIES)}")
