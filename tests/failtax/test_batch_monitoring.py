"""The monitoring stage as batch files: export the LLM monitors' calls of `failtax monitor
evaluate`, answer them (a stand-in runner; an error line, a truncated answer and a
killed task among them), import, and the evaluation rerun makes zero live calls with
the answers the live monitors would have got. The real runner is in
tests/failtax/test_batch_server.py."""

from __future__ import annotations

import asyncio
import json

import pytest
from click.testing import CliRunner
from test_batch import IDENTITY, MODEL, NoLiveCalls, StubServer, answer_line, answer_round
from test_batch import config as pipeline_config

from common import read_jsonl
from failtax.batch import BatchFolder, export, import_results
from failtax.batch.monitoring import export_monitoring
from failtax.monitor.cli import evaluate_all
from failtax.monitor.config import MonitorConfig
from failtax.types import Mode, Taxonomy
from serving.cache import CachedBackend
from serving.client import OpenAICompatBackend

MODES = ["Thin vertical object missed", "Faint wide surface ahead"]


@pytest.fixture
def episodes(tmp_path, episode_factory):
    root = tmp_path / "monitor-episodes"
    root.mkdir()
    for i in range(2):
        episode_factory(root, f"fail-{i}", hazard="pole", n_steps=10, seed=i)
        episode_factory(root, f"ok-{i}", hazard="plain_wall", n_steps=10, seed=10 + i, outcome="success")
    return root


def monitors(tmp_path) -> list[MonitorConfig]:
    tax = Taxonomy([Mode(n, f"collisions with a {n.lower()}", ["k"]) for n in MODES], "ensemble")
    (tmp_path / "taxonomy.json").write_text(json.dumps(tax.to_dict()))
    backend = {"recipe": "embedded", "cache_dir": str(tmp_path / "cache")}
    return [MonitorConfig(variant=v, taxonomy_path=str(tmp_path / "taxonomy.json"), decision_every_steps=3,
                          backend=backend) for v in ("taxonomy", "nocontext")]


def rounds(cfgs, episodes, batch_dir, special=None):
    """Export, answer, import until nothing is left; the exports and imports."""
    exports, imports, bodies = [], [], []
    for n in range(6):
        result = asyncio.run(export_monitoring(cfgs, {"id": episodes}, batch_dir, identity=IDENTITY, shard_size=7,
                                               progress=False))
        exports.append(result)
        if result.stage is None:
            return exports, imports, bodies
        bodies += [json.loads(x)["body"] for s in result.shards for x in s.read_text().splitlines()]
        answer_round(result, (lambda r, n=n: special(r, n)) if special else None)
        imports.append(import_results(None, batch_dir))
    raise AssertionError("monitoring rounds did not converge")


def test_monitoring_export_import_then_evaluate_makes_zero_live_calls(tmp_path, episodes, monkeypatch):
    cfgs = monitors(tmp_path)
    import serving

    # the live evaluation, for comparison (its cache scope is the stub's URL, so its own cache)
    with StubServer([("auto",)], version="0.32.0") as stub:
        monkeypatch.setattr(serving, "make_backend", lambda cfg: CachedBackend(
            OpenAICompatBackend(stub.base_url, MODEL), tmp_path / "live-cache"))
        live = asyncio.run(evaluate_all(cfgs, {"id": episodes}, tmp_path / "live", progress=False))
        live_bodies = list(stub.completed)
    assert sum(c["calls"] for c in live["model_calls"].values()) == len(live_bodies) > 8

    batch_dir = tmp_path / "eval" / "batch"
    faults: dict[str, str] = {}

    def special(request, n):
        cid = request["custom_id"]
        if n == 0 and len(faults) < 3:  # round 1: an error line, a cut answer, a killed task
            kind = ("error", "truncated", "killed")[len(faults)]
            faults[cid] = kind
            if kind == "error":
                return {"custom_id": cid, "response": {"status_code": 500, "body": None},
                        "error": {"message": "engine died"}}
            if kind == "truncated":
                return answer_line(request, finish="length", text='{"verdict": "SA')
            return None
        return answer_line(request)

    exports, imports, bodies = rounds(cfgs, episodes, batch_dir, special)
    assert [e.stage for e in exports] == ["monitoring", "monitoring", None]
    first = imports[0]
    assert (first.error_lines, first.truncated, first.reasks, first.missing) == (1, 1, 1, 1)
    second = {json.loads(x)["custom_id"] for s in exports[1].shards for x in s.read_text().splitlines()}
    assert second == set(faults)  # every fault asked again, nothing else
    errors = {e["custom_id"]: e for e in read_jsonl(BatchFolder(batch_dir).errors)}
    assert all(errors[c]["episode_id"] and errors[c]["stage"] == "monitoring"
               for c, k in faults.items() if k != "truncated")
    # the batch asked what the live monitors sent (the re-ask aside; error and killed asked twice)
    firsts = [b for b in bodies if len(b["messages"]) == 1]
    assert len(firsts) == len(live_bodies) + 2
    assert {json.dumps(b, sort_keys=True) for b in firsts} == {json.dumps(b, sort_keys=True) for b in live_bodies}

    # the evaluation rerun: every call from the cache, none reaches a model
    monkeypatch.setattr(serving, "make_backend", lambda cfg: CachedBackend(NoLiveCalls(), tmp_path / "cache"))
    again = asyncio.run(evaluate_all(cfgs, {"id": episodes}, tmp_path / "eval", progress=False))
    assert all(c["calls"] == 0 and c["hits"] > 0 for c in again["model_calls"].values())
    for label, sets in again["monitors"].items():
        m = sets["id"]
        assert m["decisions_by_model"] == m["decisions"] == live["monitors"][label]["id"]["decisions"]
        assert m["confusion"] == live["monitors"][label]["id"]["confusion"]


def test_monitoring_export_refuses_mixed_models_and_pipeline_export(tmp_path, episodes, tiny_episodes):
    cfgs = monitors(tmp_path)
    cfgs[1] = cfgs[1].model_copy(update={"backend": cfgs[1].backend.model_copy(update={"recipe": "qwen2.5-coder-1.5b"})})
    with pytest.raises(ValueError, match="one model"):
        asyncio.run(export_monitoring(cfgs, {"id": episodes}, tmp_path / "b", identity=IDENTITY, progress=False))
    with pytest.raises(ValueError, match="export_monitoring"):
        asyncio.run(export(pipeline_config(tmp_path), tmp_path / "run", episodes=tiny_episodes, stage="monitoring",
                           identity=IDENTITY, progress=False))


def test_cli_export_monitoring_writes_shards(tmp_path, episodes, monkeypatch):
    from failtax.cli import main
    from serving.batch import BatchIdentity

    monkeypatch.setattr(BatchIdentity, "from_recipe", classmethod(lambda cls, recipe, model_dir=None: IDENTITY))
    cfg = tmp_path / "monitor.yaml"
    tax = Taxonomy([Mode(n, "d", ["k"]) for n in MODES], "ensemble")
    (tmp_path / "taxonomy.json").write_text(json.dumps(tax.to_dict()))
    cfg.write_text(f"variant: taxonomy\ntaxonomy_path: {tmp_path / 'taxonomy.json'}\ndecision_every_steps: 3\n"
                   f"backend:\n  recipe: embedded\n  cache_dir: {tmp_path / 'cache'}\n")
    out = CliRunner().invoke(main, ["batch", "export", "monitoring", "--run-dir", str(tmp_path / "eval"),
                                    "--config", str(cfg), "--episodes", f"id={episodes}", "--quiet"])
    assert out.exit_code == 0, out.output
    assert '"stage": "monitoring"' in out.output and "failtax batch import" in out.output
    shards = list((tmp_path / "eval" / "batch" / "monitoring" / "round-01" / "requests").glob("shard-*.jsonl"))
    assert shards and all(json.loads(x)["url"] == "/v1/chat/completions" for x in shards[0].read_text().splitlines())
    imported = CliRunner().invoke(main, ["batch", "import", "--run-dir", str(tmp_path / "eval")])
    assert imported.exit_code == 0 and '"missing":' in imported.output


def test_monitors_deciding_by_probability_run_as_batch_rounds(tmp_path, episodes, monkeypatch):
    """`decide: probability`: the one-word answers and their token probabilities come back
    through the batch files, the mode question at each alarm is a later round, and the
    evaluation then makes no live call and decides as the live monitors did."""
    cfgs = [c.model_copy(update={"decide": "probability", "k_consecutive": 1,
                                 "unsafe_threshold": 0.3}) for c in monitors(tmp_path)]
    import serving

    with StubServer([("auto",)], version="0.32.0") as stub:
        monkeypatch.setattr(serving, "make_backend", lambda cfg: CachedBackend(
            OpenAICompatBackend(stub.base_url, MODEL), tmp_path / "live-cache"))
        live = asyncio.run(evaluate_all(cfgs, {"id": episodes}, tmp_path / "live", progress=False))
        live_bodies = list(stub.completed)
    assert all(b["logprobs"] for b in live_bodies)
    modes_asked = [b for b in live_bodies if "Which failure mode" in b["messages"][0]["content"]]
    assert modes_asked  # an alarm fired and its mode was asked

    exports, imports, _ = rounds(cfgs, episodes, tmp_path / "eval" / "batch")
    assert [e.stage for e in exports] == ["monitoring", "monitoring", None]  # decisions, then modes
    assert sum(i.answers for i in imports) == len(live_bodies)
    monkeypatch.setattr(serving, "make_backend", lambda cfg: CachedBackend(NoLiveCalls(), tmp_path / "cache"))
    again = asyncio.run(evaluate_all(cfgs, {"id": episodes}, tmp_path / "eval", progress=False))
    assert all(c["calls"] == 0 for c in again["model_calls"].values())
    for label, sets in again["monitors"].items():
        m, was = sets["id"], live["monitors"][label]["id"]
        assert m["decisions_by_model"] == m["decisions"] == was["decisions"]
        assert m["confusion"] == was["confusion"] and m["episode_auroc"] == was["episode_auroc"]
        assert m["modes_at_true_alarms"] == was["modes_at_true_alarms"]
