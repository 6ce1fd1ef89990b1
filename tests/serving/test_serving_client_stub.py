"""Control flow of the HTTP client against a scripted local server: retries,
rate limits, timeouts, structured-output capability fallback, parsing, re-ask."""

from __future__ import annotations

import asyncio
import json

import pytest
from serving_stub_server import StubServer

from serving.client import OpenAICompatBackend
from serving.protocol import BackendError

SCHEMA = {
    "type": "object",
    "properties": {"mode": {"enum": ["glass", "pole"]}, "why": {"type": "string"}},
    "required": ["mode", "why"],
}
MSG = [{"role": "user", "content": "what happened?"}]


def run(coro):
    return asyncio.run(coro)


def backend(stub: StubServer, **kw) -> OpenAICompatBackend:
    kw.setdefault("retries", 2)
    kw.setdefault("backoff_s", 0.01)
    kw.setdefault("timeout_s", 5)
    return OpenAICompatBackend(stub.base_url, "stub-model", **kw)


def test_retries_5xx_then_succeeds():
    with StubServer(
        [("status", 503, {"error": "busy"}), ("status", 500, "oops"), ("reply", "hello")]
    ) as stub:
        r = run(backend(stub).complete(MSG, max_tokens=8))
    assert r.text == "hello" and len(stub.requests) == 3
    assert r.usage.prompt_tokens == 10 and r.usage.completion_tokens == 5 and r.latency_s > 0


def test_gives_up_after_retries_with_last_error():
    with StubServer([("status", 502, "bad gateway")]) as stub:
        with pytest.raises(BackendError, match=r"gave up after 3 attempts.*502"):
            run(backend(stub).complete(MSG, max_tokens=8))
    assert len(stub.requests) == 3


def test_429_honours_retry_after():
    with StubServer(
        [("status", 429, "slow down", {"Retry-After": "0.6"}), ("reply", "ok")]
    ) as stub:
        r = run(backend(stub, backoff_s=0.0).complete(MSG, max_tokens=8))
    assert r.text == "ok"
    assert stub.times[1] - stub.times[0] >= 0.55


def test_timeout_is_retried_then_reported():
    with StubServer([("sleep", 1.5)]) as stub, pytest.raises(BackendError, match="ReadTimeout"):
        run(backend(stub, timeout_s=0.3, retries=1).complete(MSG, max_tokens=8))
    assert len(stub.requests) == 2


def test_dropped_connection_is_retried():
    with StubServer([("drop",), ("reply", "back")]) as stub:
        assert run(backend(stub).complete(MSG, max_tokens=8)).text == "back"


def test_refused_connection_reports_url():
    b = OpenAICompatBackend("http://127.0.0.1:9/v1", "m", retries=1, backoff_s=0.01, timeout_s=2)
    with pytest.raises(BackendError, match="127.0.0.1:9"):
        run(b.complete(MSG, max_tokens=8))


def test_client_4xx_is_not_retried():
    with StubServer([("status", 400, {"error": "context too long"})]) as stub:
        with pytest.raises(BackendError, match="HTTP 400"):
            run(backend(stub).complete(MSG, max_tokens=8))
    assert len(stub.requests) == 1


def test_vllm_dialect_sends_structured_outputs():
    with StubServer([("reply", '{"mode":"glass","why":"transparent"}')], version="0.32.0") as stub:
        r = run(backend(stub).complete_json(MSG, SCHEMA, max_tokens=600))
        sent = stub.requests[0]["body"]
    assert (
        r.parsed == {"mode": "glass", "why": "transparent"} and r.error is None and r.attempts == 1
    )
    assert "json" in sent["structured_outputs"] and "response_format" not in sent
    # every string got a length cap before it was sent (runaway strings otherwise)
    assert sent["structured_outputs"]["json"]["properties"]["why"]["maxLength"] == 400
    assert sent["seed"] == 0 and sent["temperature"] == 0.0


def test_vllm_choice_asks_for_and_returns_the_choice_probabilities():
    top = [{"token": "UN", "logprob": -0.1}, {"token": "SAFE", "logprob": -2.5}]
    with StubServer([("reply", "UNSAFE", "stop", top), ("reply", "SAFE")], version="0.32.0") as stub:
        r = run(backend(stub).complete_choice(MSG, ["SAFE", "UNSAFE"]))
        sent = stub.requests[0]["body"]
        bare = run(backend(stub).complete_choice(MSG, ["SAFE", "UNSAFE", "x"]))
    assert sent["logprobs"] is True and sent["top_logprobs"] >= 2
    assert sent["structured_outputs"] == {"choice": ["SAFE", "UNSAFE"]}
    assert r.parsed == "UNSAFE" and r.choice_probs == {"SAFE": 0.0832, "UNSAFE": 0.9168}
    assert bare.parsed == "SAFE" and bare.choice_probs is None  # the server sent none


def test_old_vllm_uses_guided_fields():
    with StubServer([("reply", "glass")], version="0.8.5") as stub:
        r = run(backend(stub).complete_choice(MSG, ["glass", "pole"]))
        assert stub.requests[0]["body"]["guided_choice"] == ["glass", "pole"]
    assert r.parsed == "glass"


def test_unknown_server_gets_response_format_then_falls_back_to_prompt():
    script = [
        ("status", 400, {"error": "response_format json_schema is not supported"}),
        ("reply", 'Sure!\n```json\n{"mode": "pole", "why": "thin"}\n```'),
    ]
    with StubServer(script) as stub:
        b = backend(stub)
        r = run(b.complete_json(MSG, SCHEMA, max_tokens=600))
        first, second = (q["body"] for q in stub.requests)
    assert first["response_format"]["type"] == "json_schema"
    assert "response_format" not in second and "JSON schema" in second["messages"][-1]["content"]
    assert r.parsed == {"mode": "pole", "why": "thin"}
    assert b._dialect == "prompt"  # remembered: no second rejected request next time


def test_prompt_mode_reasks_once_with_the_parse_error():
    script = [
        ("reply", "<think>hmm</think> the mode is glass"),
        ("reply", '{"mode":"glass","why":"clear pane"}'),
    ]
    with StubServer(script) as stub:
        r = run(
            backend(stub, structured_outputs="prompt").complete_json(MSG, SCHEMA, max_tokens=600)
        )
        reask = stub.requests[1]["body"]["messages"]
    assert r.parsed == {"mode": "glass", "why": "clear pane"} and r.attempts == 2
    assert reask[-2]["role"] == "assistant" and "could not be used" in reask[-1]["content"]


def test_two_bad_answers_give_a_typed_failure_not_an_exception():
    with StubServer([("reply", '{"mode":"door","why":"x"}')]) as stub:
        r = run(
            backend(stub, structured_outputs="prompt").complete_json(MSG, SCHEMA, max_tokens=600)
        )
    assert r.parsed is None and r.attempts == 2 and "mode" in r.error and len(stub.requests) == 2


def test_cut_off_answer_says_so():
    with StubServer([("reply", '{"mode":"glass","why":"aaaa', "length")], version="0.32.0") as stub:
        r = run(backend(stub).complete_json(MSG, SCHEMA, max_tokens=600))
    assert r.parsed is None and "max_tokens=600" in r.error


def test_choice_prompt_fallback_and_reask():
    with StubServer([("reply", "I think neither"), ("reply", "Pole.")]) as stub:
        r = run(backend(stub).complete_choice(MSG, ["glass", "pole"]))
        assert "glass | pole" in stub.requests[0]["body"]["messages"][-1]["content"]
    assert r.parsed == "pole" and r.attempts == 2


def test_api_key_from_env_sent_but_never_shown(monkeypatch):
    monkeypatch.setenv("STUB_KEY", "sk-secret-123")
    with StubServer([("reply", "hi")]) as stub:
        b = backend(stub, api_key_env="STUB_KEY")
        run(b.complete(MSG, max_tokens=8))
        assert stub.requests[0]["headers"]["Authorization"] == "Bearer sk-secret-123"
    assert "sk-secret" not in repr(b)


def test_missing_api_key_env_names_the_variable():
    with pytest.raises(ValueError, match="NO_SUCH_KEY_VAR"):
        OpenAICompatBackend("http://127.0.0.1:1/v1", "m", api_key_env="NO_SUCH_KEY_VAR")


def test_concurrency_limit_is_respected():
    with StubServer([("sleep", 0.3)]) as stub:
        b = backend(stub, concurrency=2)

        async def many():
            return await asyncio.gather(
                *[b.complete([{"role": "user", "content": str(i)}], max_tokens=4) for i in range(4)]
            )

        run(many())
        t = sorted(stub.times)
    # 4 requests, 2 at a time: the 3rd starts only after the 1st finished
    assert t[2] - t[0] >= 0.25


def test_images_are_resized_to_recipe_bounds_and_limited():
    import base64
    import io

    from PIL import Image

    from serving.recipes import get_recipe

    buf = io.BytesIO()
    Image.new("RGB", (1000, 500), (10, 20, 30)).save(buf, format="PNG")
    recipe = get_recipe("qwen2.5-vl-3b")
    msg = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "two frames"},
                {"type": "image", "image": buf.getvalue()},
                {"type": "image", "image": Image.new("RGB", (20, 20))},
            ],
        }
    ]
    with StubServer([("reply", "ok")]) as stub:
        run(backend(stub, recipe=recipe).complete(msg, max_tokens=4))
        parts = stub.requests[0]["body"]["messages"][0]["content"]
    sizes = []
    for p in parts[1:]:
        img = Image.open(io.BytesIO(base64.b64decode(p["image_url"]["url"].split(",", 1)[1])))
        sizes.append(img.size)
        assert img.width % 28 == 0 and img.height % 28 == 0
        assert recipe.min_pixels <= img.width * img.height <= recipe.max_pixels
    assert sizes[0][0] > sizes[0][1]  # aspect kept
    too_many = [{"role": "user", "content": [{"type": "image", "image": buf.getvalue()}] * 9}]
    with pytest.raises(ValueError, match="allows 8"):
        run(backend(StubServer([("reply", "x")]), recipe=recipe).complete(too_many, max_tokens=4))


def test_dead_managed_server_is_reported_with_log_tail(tmp_path):
    import subprocess
    import sys

    from serving.launcher import ServerHandle

    log = tmp_path / "server.log"
    log.write_text("INFO starting\nERROR engine core died: out of memory\n")
    proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    proc.wait()
    handle = ServerHandle(base_url="http://127.0.0.1:9/v1", model="m", process=proc, log_path=log)
    b = OpenAICompatBackend(
        handle.base_url, "m", server=handle, retries=5, backoff_s=1.0, timeout_s=2
    )
    with pytest.raises(BackendError, match=r"(?s)exited with code 3.*engine core died"):
        run(b.complete(MSG, max_tokens=4))


def test_json_body_shape_is_openai_compatible():
    with StubServer([("reply", "x")]) as stub:
        run(backend(stub).complete(MSG, max_tokens=7, temperature=0.5, seed=3))
        body = stub.requests[0]["body"]
    assert body == {
        "model": "stub-model",
        "messages": MSG,
        "max_tokens": 7,
        "temperature": 0.5,
        "seed": 3,
    }
    json.dumps(body)


def test_aclose_stops_only_an_owned_server():
    import subprocess
    import sys

    from serving.launcher import ServerHandle

    def sleeper():
        proc = subprocess.Popen(
            [sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True
        )
        return ServerHandle(base_url="http://127.0.0.1:9/v1", model="m", process=proc)

    owned, shared = sleeper(), sleeper()
    try:
        run(OpenAICompatBackend(owned.base_url, "m", server=owned, owns_server=True).aclose())
        run(OpenAICompatBackend(shared.base_url, "m", server=shared).aclose())
        assert not owned.alive() and shared.alive()
    finally:
        shared.stop()
