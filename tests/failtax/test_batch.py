"""Batch export → answer → import → finish, against the all-live run.

The answers here come from a stand-in for vLLM's batch runner that answers each
request line from its own body (`auto_answer`: a valid instance of the request's
constraint, chosen by a hash of the messages), and the all-live run gets the same
answers from an HTTP stub server: so the two runs must agree exactly. The real
runner with the embedded model is tests/serving/test_batch_server.py.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

from common import read_jsonl
from failtax.batch import BatchFolder, export, finish, import_results
from failtax.config import load_config
from failtax.pipeline import run_pipeline
from failtax.run_folder import read_assignments, read_explanations, read_taxonomy
from serving.batch import BatchIdentity
from serving.cache import CachedBackend
from serving.client import OpenAICompatBackend

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "serving"))
from serving_stub_server import StubServer, auto_alternatives, auto_answer, logprobs_block

MODEL = "smollm2-135m-instruct"
IDENTITY = BatchIdentity(MODEL, {"endpoint": "launched", "weights": "test-weights"}, 4096)


class NoLiveCalls:
    """A backend with the batch's identity that fails the test if any call reaches it."""

    model_id = MODEL
    cache_scope = IDENTITY.scope

    async def complete(self, *a, **k):
        raise AssertionError("a live model call was made")

    complete_json = complete_choice = complete


def config(tmp_path, **extra):
    values = {
        "reasoning.input_mode": "scene_text",
        "reasoning.concurrency": 2,
        "discovery.embedding.kind": "hashing",
        "discovery.min_modes": 2,
        "discovery.max_modes": 3,
        "assignment.embedding.kind": "hashing",
        "assignment.method": "llm",
        "cache_dir": str(tmp_path / "cache"),
        "seed": 0,
    }
    values.update(extra)
    return load_config(None, values)


def answer_line(request: dict, *, finish="stop", text=None) -> dict:
    body = request["body"]
    text = text if text is not None else auto_answer(body)
    choice = {"message": {"role": "assistant", "content": text}, "finish_reason": finish}
    alts = auto_alternatives(body, text)
    if alts:
        choice["logprobs"] = logprobs_block(alts)
    return {
        "id": "r-" + request["custom_id"],
        "custom_id": request["custom_id"],
        "response": {
            "status_code": 200,
            "request_id": "x",
            "body": {
                "choices": [choice],
                "usage": {"prompt_tokens": 10, "completion_tokens": 5},
            },
        },
        "error": None,
    }


def answer_round(result, special=None) -> None:
    """The stand-in runner: one result file per shard; `special(request)` may return a
    replacement line or None to leave a request unanswered (a killed task)."""
    for shard in result.shards:
        lines = []
        for raw in shard.read_text().splitlines():
            request = json.loads(raw)
            line = special(request) if special else answer_line(request)
            if line is not None:
                lines.append(json.dumps(line))
        (result.round_dir / "results" / shard.name).write_text("\n".join(lines) + "\n")


def batch_rounds(cfg, run_dir, episodes, special=None, max_rounds=10):
    """Export and answer until nothing is left; the exported bodies and import counts."""
    bodies, imports, exports = [], [], []
    for n in range(max_rounds):
        result = asyncio.run(export(cfg, run_dir, episodes=episodes, identity=IDENTITY, shard_size=4,
                                    progress=False))
        exports.append(result)
        if result.stage is None:
            return bodies, imports, exports
        bodies += [json.loads(x)["body"] for s in result.shards for x in s.read_text().splitlines()]
        answer_round(result, (lambda r, n=n: special(r, n)) if special else None)
        imports.append(import_results(cfg, run_dir / "batch", identity=IDENTITY))
    raise AssertionError("batch rounds did not converge")


def test_batch_run_matches_live_run_with_zero_live_calls(tmp_path, tiny_episodes):
    cfg = config(tmp_path)
    with StubServer([("auto",)], version="0.32.0") as stub:
        live = CachedBackend(OpenAICompatBackend(stub.base_url, MODEL), tmp_path / "live-cache")
        live_summary = run_pipeline(cfg, tmp_path / "live", episodes=tiny_episodes, backend=live, progress=False)
        live_bodies = list(stub.completed)
    assert live_summary["model_calls"]["calls"] > 6  # reasoning, naming and assignment all called

    run_dir = tmp_path / "batch-run"
    bodies, imports, exports = batch_rounds(cfg, run_dir, tiny_episodes)
    assert [e.stage for e in exports] == ["reason", "discover", "assign", None]
    assert exports[-1].stages_done == ["downsample", "reason", "discover", "assign"]
    # the batch asked exactly what the live client sent
    canon = sorted(json.dumps(b, sort_keys=True) for b in bodies)
    assert canon == sorted(json.dumps(b, sort_keys=True) for b in live_bodies)
    assert sum(i.answers for i in imports) == len(live_bodies)

    # the last export ran every stage from the cache; the normal pipeline over a fresh run
    # folder, with a backend that fails the test on any live call, redoes them all
    fresh = tmp_path / "fresh-run"
    summary = run_pipeline(cfg, fresh, episodes=tiny_episodes, progress=False,
                           backend=CachedBackend(NoLiveCalls(), cfg.cache_dir))
    assert summary["model_calls"] == {"calls": 0, "hits": len(live_bodies)}
    summary = asyncio.run(finish(cfg, run_dir, episodes=tiny_episodes, identity=IDENTITY, progress=False))
    assert summary["model_calls"]["calls"] == 0 and summary["unanswered_calls"] == 0
    for finished in (run_dir, fresh):
        check_same_as_live(tmp_path / "live", finished)


def check_same_as_live(live_dir, run_dir):
    live_tax, batch_tax = read_taxonomy(live_dir), read_taxonomy(run_dir)
    assert [m.to_dict() for m in batch_tax.modes] == [m.to_dict() for m in live_tax.modes]
    # call ids differ: the live run's cache scope is the stub's URL, the batch's the weights
    same = lambda a: {k: v for k, v in a.to_dict().items() if k != "call_ids"}
    assert [same(a) for a in read_assignments(run_dir)] == [same(a) for a in read_assignments(live_dir)]
    strip = lambda es: [(e.episode_id, e.trajectory, e.failure_reason, e.degenerate) for e in es]
    assert strip(read_explanations(run_dir)) == strip(read_explanations(live_dir))
    assert (run_dir / "report.html").is_file()
    assert not read_jsonl(run_dir / "errors.jsonl")


def test_error_line_truncation_and_killed_task_are_retried_not_lost(tmp_path, tiny_episodes):
    cfg = config(tmp_path, stages=["downsample", "reason"])
    trouble: dict[str, str] = {}

    def special(request, n):
        cid = request["custom_id"]
        if n == 0 and not trouble:
            trouble[cid] = "error"
            return {"id": "e", "custom_id": cid, "response": {"status_code": 400, "request_id": "x"},
                    "error": {"message": "bad request: stand-in error"}}
        if n == 0 and len(trouble) == 1:
            trouble[cid] = "truncated"
            return answer_line(request, finish="length", text='{"trajectory": "drove stra')
        if n == 0 and len(trouble) == 2:
            trouble[cid] = "killed"
            return None
        return answer_line(request)

    run_dir = tmp_path / "run"
    bodies, imports, exports = batch_rounds(cfg, run_dir, tiny_episodes, special)
    first = imports[0]
    assert (first.error_lines, first.reasks, first.truncated, first.missing) == (1, 1, 1, 1)
    assert first.answers == 6 - 3
    second = exports[1]
    assert second.stage == "reason" and second.requests == 3 and second.reasks == 1
    reask = [b for b in bodies[6:] if len(b["messages"]) == 3]
    assert len(reask) == 1 and reask[0]["messages"][1]["content"].startswith('{"trajectory"')
    assert "max_tokens" in reask[0]["messages"][2]["content"]  # says the answer was cut
    errors = read_jsonl(run_dir / "batch" / "errors.jsonl")
    assert {e["kind"] for e in errors} == {"error_line", "no_result"}
    assert all(e["episode_id"] for e in errors)  # each names its episode
    summary = asyncio.run(finish(cfg, run_dir, episodes=tiny_episodes, identity=IDENTITY, progress=False))
    assert summary["model_calls"]["calls"] == 0
    explanations = read_explanations(run_dir)
    assert len(explanations) == 6 and not any(e.degenerate for e in explanations if e.input_mode != "scene_text")
    assert {e.input_mode for e in explanations} == {"scene_text"}


def test_over_long_prompts_are_listed_with_why_and_never_sent(tmp_path, tiny_episodes):
    cfg = config(tmp_path, stages=["downsample", "reason"])
    tiny = BatchIdentity(MODEL, {"endpoint": "launched", "weights": "test-weights"}, 300)
    result = asyncio.run(export(cfg, tmp_path / "run", episodes=tiny_episodes, identity=tiny, progress=False))
    assert result.stage is None and result.requests == 0  # nothing fits: nothing is exported
    listed = read_jsonl(tmp_path / "run" / "batch" / "errors.jsonl")
    assert len(listed) == 6 and {e["kind"] for e in listed} == {"too_long"}
    assert len({e["episode_id"] for e in listed}) == 6
    summary = asyncio.run(finish(cfg, tmp_path / "run", episodes=tiny_episodes, identity=tiny, progress=False))
    assert summary["model_calls"]["calls"] == 6  # reached the batch backend, which sent nothing
    run_errors = read_jsonl(tmp_path / "run" / "errors.jsonl")
    why = {e["episode_id"]: e["message"] for e in run_errors if e.get("stage") == "reason"}
    assert len(why) == 6 and all("exceeds the model's context" in m for m in why.values())
    assert len(read_explanations(tmp_path / "run")) == 6  # every episode explained (facts) or listed


def test_export_refuses_an_unknown_stage(tmp_path, tiny_episodes):
    with pytest.raises(ValueError, match="valid: assign"):
        asyncio.run(export(config(tmp_path), tmp_path / "run", stage="naming2", identity=IDENTITY))
    assert not BatchFolder(tmp_path / "run" / "batch").rounds()


def test_batch_recipe_is_the_model_the_live_run_serves():
    """Without backend.recipe, `kind: embedded` serves the default local model; the batch
    must be answered by that same model, or its answers are not the live run's."""
    from failtax.batch import batch_recipe
    from serving.embedded import DEFAULT_LOCAL

    assert batch_recipe(load_config(None, {"backend.kind": "embedded"})).name == DEFAULT_LOCAL
    assert batch_recipe(load_config(None, {"backend.recipe": "embedded"})).name == "embedded"


def test_parity_counts_answers_that_differ_and_calls_in_one_run_only(tmp_path):
    from failtax.batch.parity import call_agreement
    from serving.protocol import CallResult

    a, b = CachedBackend(NoLiveCalls(), tmp_path / "a"), CachedBackend(NoLiveCalls(), tmp_path / "b")
    for key, text_a, text_b in (("k1", "same", "same"), ("k2", "live", "batch")):
        a.put(key, CallResult(text_a, MODEL, key), {"method": "complete_json"})
        b.put(key, CallResult(text_b, MODEL, key), {"method": "complete_json"})
    a.put("k3", CallResult("only live", MODEL, "k3"), {"method": "complete_choice"})
    r = call_agreement(a.cache_dir, b.cache_dir)
    assert (r["common"], r["same"], r["different"], r["only_a"], r["only_b"]) == (2, 1, 1, 1, 0)
    assert r["by_method"] == {"complete_json": [1, 1]}
    assert r["examples"] == [{"key": "k2", "method": "complete_json", "a": "live", "b": "batch"}]


def test_reading_reports_runs_as_a_batch_like_live(tmp_path):
    """People's reports (CSV): the model's reading goes through the batch files too, and
    the explanations match the live run's (the answer, the report kept, who wrote it)."""
    reports = tmp_path / "reports.csv"
    reports.write_text(
        "episode_id,failure_reason,fleet\n"
        "a,On 2024-01-02 the Northwind AMR struck a glass door at 0.5 m/s. Case NW-1 closed.,northwind\n"
        "b,Our bot ran into a thing with four legs and a backrest.,cobalt\n"
        "c,The Northwind AMR clipped a thin metal stand in ward 3. Case NW-2 closed.,northwind\n")
    cfg = load_config(None, {"stages": ["reason"], "source.writer_column": "fleet",
                             "reasoning.concurrency": 2, "cache_dir": str(tmp_path / "cache"),
                             "seed": 0})
    with StubServer([("auto",)], version="0.32.0") as stub:
        live = CachedBackend(OpenAICompatBackend(stub.base_url, MODEL), tmp_path / "live-cache")
        run_pipeline(cfg, tmp_path / "live", episodes=reports, backend=live, progress=False)
        live_bodies = list(stub.completed)
    assert len(live_bodies) == 3 and all("{report}" not in b["messages"][0]["content"]
                                         for b in live_bodies)
    run_dir = tmp_path / "batch-run"
    bodies, imports, exports = batch_rounds(cfg, run_dir, reports)
    assert sum(i.answers for i in imports) == 3
    assert [e.stage for e in exports] == ["reason", None]
    assert sorted(json.dumps(b, sort_keys=True) for b in bodies) == sorted(
        json.dumps(b, sort_keys=True) for b in live_bodies)
    asyncio.run(finish(cfg, run_dir, episodes=reports, identity=IDENTITY, progress=False))
    keep = lambda es: sorted((e.episode_id, e.failure_reason, e.input_mode, e.report, e.writer)
                             for e in es)
    batch, live_run = read_explanations(run_dir), read_explanations(tmp_path / "live")
    assert keep(batch) == keep(live_run)
    assert {e.input_mode for e in batch} == {"report"} and all(e.report for e in batch)
