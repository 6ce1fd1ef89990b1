"""serving.batch: request bodies, the resumable local runner, result import, Ray rows.

The runner tests use a stand-in for vLLM's batch runner (fake_run_batch.py); the
real one runs in tests/failtax/test_batch_server.py (marked server).
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
import sys
from pathlib import Path

import pytest

from serving.batch import (
    BatchBackend,
    BatchIdentity,
    TokenCounter,
    import_result,
    result_parts,
    run_batch_local,
)
from serving.batch_ray import to_result_line, to_row
from serving.protocol import BackendError
from serving.recipes import get_recipe

HERE = Path(__file__).resolve().parent
IDENTITY = BatchIdentity("smollm2-135m-instruct", {"endpoint": "launched", "weights": "w"}, 4096)
SCHEMA = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}


@pytest.fixture
def fake_vllm(tmp_path, monkeypatch):
    """A server python whose `-m vllm.entrypoints.openai.run_batch` is the stand-in."""
    wrapper = tmp_path / "fake-python"
    wrapper.write_text(f'#!/bin/sh\nshift 2\nexec {sys.executable} {HERE / "fake_run_batch.py"} "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IEXEC)
    calls = tmp_path / "calls.txt"
    monkeypatch.setenv("FAKE_RUN_BATCH_CALLS", str(calls))
    return wrapper, calls


def record(backend: BatchBackend, method: str, *args, **kw):
    with pytest.raises(BackendError) as info:
        asyncio.run(getattr(backend, method)(*args, **kw))
    return info.value


def shard_of(tmp_path, n=3) -> Path:
    backend = BatchBackend(IDENTITY)
    for i in range(n):
        record(backend, "complete_json", [{"role": "user", "content": f"name mode {i}"}], SCHEMA, max_tokens=40)
    path = tmp_path / "shard-00000.jsonl"
    path.write_text("".join(json.dumps(r.line()) + "\n" for r in backend.recorded.values()))
    return path


def test_recorded_request_is_the_live_clients_body():
    backend = BatchBackend(IDENTITY)
    err = record(backend, "complete_json", [{"role": "user", "content": "hi"}], SCHEMA, max_tokens=40, seed=7)
    [item] = backend.recorded.values()
    assert item.custom_id in str(err) and "no answer yet" in str(err)
    body = item.line()["body"]
    assert body["seed"] == 7 and body["max_tokens"] == 40
    # the live client caps every schema string for vLLM's structured outputs
    assert body["structured_outputs"]["json"]["properties"]["name"]["maxLength"] == 400
    record(backend, "complete_choice", [{"role": "user", "content": "pick"}], ["a", "bb"])
    choice = next(i for i in backend.recorded.values() if i.method == "complete_choice")
    assert choice.body["structured_outputs"] == {"choice": ["a", "bb"]} and choice.body["max_tokens"] == 18


def test_images_are_sent_as_openai_image_url_parts():
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 10, 10)).save(buf, format="PNG")
    recipe = get_recipe("qwen2.5-vl-3b")
    backend = BatchBackend(IDENTITY, recipe=recipe)
    content = [{"type": "text", "text": "what?"}, {"type": "image", "image": buf.getvalue()}]
    record(backend, "complete", [{"role": "user", "content": content}], max_tokens=8)
    [item] = backend.recorded.values()
    parts = item.body["messages"][0]["content"]
    assert [p["type"] for p in parts] == ["text", "image_url"]
    assert parts[1]["image_url"]["url"].startswith("data:image/png;base64,")
    assert item.request["messages"][0]["content"][1]["image"] != buf.getvalue()  # a digest in the cache record


def test_over_long_prompt_is_refused_before_writing():
    backend = BatchBackend(BatchIdentity("m", {}, 64))
    err = record(backend, "complete", [{"role": "user", "content": "word " * 200}], max_tokens=16)
    assert "exceeds the model's context of 64 tokens" in str(err)
    assert not backend.recorded and len(backend.too_long) == 1


def test_token_counter_uses_the_models_tokenizer_when_present():
    from serving.embedded import local_model_dir

    folder = local_model_dir("embedded")
    if not (folder / "tokenizer.json").is_file():
        pytest.skip("embedded model not converted here")
    counter = TokenCounter(folder)
    assert counter.how.startswith("tokenizer:")
    estimate = TokenCounter(None)
    text = [{"role": "user", "content": "The robot drove into a glass door it did not see."}]
    assert 10 < counter.count(text) <= estimate.count(text)  # the estimate is the conservative one


def test_import_reasks_a_truncated_json_answer_then_keeps_the_second():
    backend = BatchBackend(IDENTITY)
    record(backend, "complete_json", [{"role": "user", "content": "x"}], SCHEMA, max_tokens=5)
    [item] = backend.recorded.values()
    cut = {"custom_id": item.custom_id, "response": {"status_code": 200, "body": {
        "choices": [{"message": {"content": '{"na'}, "finish_reason": "length"}], "usage": {}}}}
    outcome = import_result(item, cut)
    assert outcome.kind == "reask" and outcome.truncated and "max_tokens=5" in outcome.first["error"]
    again = BatchBackend(IDENTITY, reasks={item.custom_id: outcome.first})
    record(again, "complete_json", [{"role": "user", "content": "x"}], SCHEMA, max_tokens=5)
    [second] = again.recorded.values()
    assert second.attempt == 2 and second.body["messages"][1] == {"role": "assistant", "content": '{"na'}
    good = {"custom_id": item.custom_id, "response": {"status_code": 200, "body": {
        "choices": [{"message": {"content": '{"name": "Glass"}'}, "finish_reason": "stop"}], "usage": {}}}}
    final = import_result(second, good)
    assert final.kind == "answer" and final.result.parsed == {"name": "Glass"} and final.result.attempts == 2
    error = import_result(second, {"custom_id": item.custom_id, "response": {"status_code": 400},
                                   "error": {"message": "context too long"}})
    assert error.kind == "error" and "context too long" in error.why


def test_runner_skips_answered_ids_and_answers_bad_rows_itself(tmp_path, fake_vllm):
    python, calls = fake_vllm
    shard = shard_of(tmp_path)
    good = shard.read_text()
    shard.write_text(good + "{not json\n" + json.dumps({"custom_id": "c-1", "method": "POST"}) + "\n")
    results = tmp_path / "results" / shard.name
    recipe = get_recipe("embedded")
    counts = run_batch_local(recipe, shard, results, python=str(python), model_dir=tmp_path)
    assert counts == {"requests": 5, "skipped": 0, "bad_rows": 2, "sent": 3}
    parts = result_parts(results)
    lines = [json.loads(x) for p in parts for x in p.read_text().splitlines()]
    assert len(lines) == 5 and sum(bool(x["error"]) for x in lines) == 2
    assert any("missing url, body" in x["error"]["message"] for x in lines if x["error"])
    again = run_batch_local(recipe, shard, results, python=str(python), model_dir=tmp_path)
    assert again["sent"] == 0 and again["skipped"] == 5
    assert len(calls.read_text().splitlines()) == 1  # vLLM was not started again
    assert "--max-model-len" in calls.read_text()  # the recipe's flags


def test_killed_runner_resumes(tmp_path, fake_vllm, monkeypatch):
    python, _calls = fake_vllm
    shard = shard_of(tmp_path)
    results = tmp_path / "results" / shard.name
    monkeypatch.setenv("FAKE_RUN_BATCH_DIE", "1")
    with pytest.raises(BackendError, match="run the same command again to resume"):
        run_batch_local(get_recipe("embedded"), shard, results, python=str(python), model_dir=tmp_path)
    assert not result_parts(results)
    monkeypatch.delenv("FAKE_RUN_BATCH_DIE")
    counts = run_batch_local(get_recipe("embedded"), shard, results, python=str(python), model_dir=tmp_path)
    assert counts["sent"] == 3 and len(result_parts(results)) == 1


def test_ray_rows_round_trip_to_result_lines():
    backend = BatchBackend(IDENTITY)
    record(backend, "complete_choice", [{"role": "user", "content": "pick"}], ["glass", "pole"], seed=3)
    [item] = backend.recorded.values()
    row = to_row(item.line())
    assert row["sampling_params"] == {"max_tokens": 21, "temperature": 0.0, "seed": 3,
                                      "structured_outputs": {"choice": ["glass", "pole"]}}
    assert json.loads(row["messages"]) == item.body["messages"]
    line = to_result_line({**row, "generated_text": "glass", "num_generated_tokens": 2, "num_input_tokens": 9})
    outcome = import_result(item, line)
    assert outcome.kind == "answer" and outcome.result.parsed == "glass"
    cut = to_result_line({**row, "generated_text": "gl", "num_generated_tokens": 21})
    assert cut["response"]["body"]["choices"][0]["finish_reason"] == "length"
    failed = to_result_line({**row, "__inference_error__": "ValueError: prompt too long"})
    assert import_result(item, failed).kind == "error"
    assert os.environ.get("FAKE_RUN_BATCH_DIE") is None


def test_ray_rows_carry_the_constraint_where_rays_vllm_stage_reads_it():
    """Ray's vLLM stage turns `sampling_params["structured_outputs"]` into vLLM's
    StructuredOutputsParams and passes every other key to SamplingParams, which rejects
    `guided_decoding` since vLLM 0.12 (every row failed). A schema travels as JSON text
    so rows with different schemas fit one Arrow column."""
    backend = BatchBackend(IDENTITY)
    record(backend, "complete_json", [{"role": "user", "content": "x"}], SCHEMA, max_tokens=40)
    record(backend, "complete_choice", [{"role": "user", "content": "pick"}], ["glass", "pole"])
    rows = [to_row(item.line()) for item in backend.recorded.values()]
    json_row = next(r for r in rows if "json" in r["sampling_params"]["structured_outputs"])
    sent = next(i.body for i in backend.recorded.values() if "json" in i.body["structured_outputs"])
    assert json.loads(json_row["sampling_params"]["structured_outputs"]["json"]) == sent["structured_outputs"]["json"]
    assert all("guided_decoding" not in r["sampling_params"] for r in rows)
