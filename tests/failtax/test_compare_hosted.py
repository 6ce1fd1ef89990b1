"""Hosted-endpoint plumbing of `failtax compare`, against a local OpenAI-compatible test server.

The server is a thread with http.server on 127.0.0.1 (no network): it checks the
Authorization header, answers with usage counts, and rate-limits with HTTP 429 +
Retry-After when told to. The client is serving's, built from a reasoner config
the way `failtax compare` builds it.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from failtax.compare.config import load_reasoner, missing_api_keys, resolve_pipeline_config
from failtax.compare.metrics import CostRecord, cost_summary
from failtax.compare.run import USAGE_FILE, CompareRun, MeteredBackend, MissingApiKey, read_usage

KEY = "sk-test-not-a-real-key"
PROMPT_TOKENS, COMPLETION_TOKENS = 120, 30


class FakeOpenAI(BaseHTTPRequestHandler):
    """POST /v1/chat/completions with usage; 429s first when `server.rate_limits` > 0."""

    def log_message(self, *args):  # keep pytest output clean
        pass

    def _send(self, status: int, body: dict, headers: dict | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path.endswith("/models"):
            self._send(
                200, {"object": "list", "data": [{"id": "hosted-model", "owned_by": "test"}]}
            )
        else:
            self._send(404, {"error": {"message": "not found"}})

    def do_POST(self):
        srv = self.server
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        srv.requests.append(
            {"time": time.monotonic(), "auth": self.headers.get("Authorization"), "body": body}
        )
        if self.headers.get("Authorization") != f"Bearer {KEY}":
            self._send(401, {"error": {"message": "invalid api key"}})
            return
        if srv.rate_limits > 0:
            srv.rate_limits -= 1
            self._send(429, {"error": {"message": "rate limit reached"}}, {"Retry-After": "1"})
            return
        if "response_format" in body:
            schema = body["response_format"]["json_schema"]["schema"]
            content = json.dumps(answer_for(schema))
        else:
            content = "glass door"
        self._send(
            200,
            {
                "id": "cmpl-1",
                "object": "chat.completion",
                "model": body["model"],
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": content},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {
                    "prompt_tokens": PROMPT_TOKENS,
                    "completion_tokens": COMPLETION_TOKENS,
                    "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS,
                },
            },
        )


def answer_for(schema: dict):
    """A schema-valid answer: the reasoning fields get a fixed explanation, the rest a minimal value."""
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type")
    if kind == "object":
        fixed = {
            "trajectory": "drove straight ahead",
            "failure_reason": "hit a glass door it could not see",
        }
        return {k: fixed.get(k) or answer_for(v) for k, v in schema.get("properties", {}).items()}
    if kind == "array":
        return [answer_for(schema.get("items", {}))] * max(1, schema.get("minItems", 1))
    if kind in ("integer", "number"):
        return schema.get("minimum", 1)
    if kind == "boolean":
        return True
    return "glass door"[: schema.get("maxLength", 64)]


@pytest.fixture
def fake_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeOpenAI)
    server.requests = []
    server.rate_limits = 0
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def hosted_reasoner(
    tmp_path: Path, server, *, name="hosted", key_env="FAILTAX_TEST_HOSTED_KEY"
) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"""
name: {name}
backend:
  kind: openai
  base_url: http://127.0.0.1:{server.server_address[1]}/v1
  model: hosted-model
  api_key_env: {key_env}
  retries: 2
  backoff_s: 0.01
  cache_dir: {tmp_path / "calls"}
  price_prompt_usd_per_1m_tokens: 2.5
  price_completion_usd_per_1m_tokens: 10.0
reasoning:
  input_mode: scene_text
""")
    return path


SCHEMA = {
    "type": "object",
    "properties": {
        "trajectory": {"type": "string", "maxLength": 80},
        "failure_reason": {"type": "string", "maxLength": 80},
    },
    "required": ["trajectory", "failure_reason"],
    "additionalProperties": False,
}


def make_backend_from(reasoner_path: Path):
    """The reasoner's BackendConfig and the backend serving builds from it."""
    from serving import BackendConfig, make_backend

    cfg = BackendConfig(**load_reasoner(reasoner_path).backend)
    return cfg, make_backend(cfg)


def test_auth_header_usage_accounting_and_429_retry_after(tmp_path, fake_server, monkeypatch):
    monkeypatch.setenv("FAILTAX_TEST_HOSTED_KEY", KEY)
    cfg, backend = make_backend_from(hosted_reasoner(tmp_path, fake_server))
    metered = MeteredBackend(lambda: _ready(backend), "hosted-model", tmp_path / "sub" / USAGE_FILE)
    fake_server.rate_limits = 1
    messages = [{"role": "user", "content": "Why did the robot fail?"}]

    async def calls():
        first = await metered.complete_json(messages, SCHEMA, max_tokens=64)
        again = await metered.complete_json(messages, SCHEMA, max_tokens=64)  # from the call cache
        metered.stage = "assign"
        choice = await metered.complete_choice(messages, ["glass door", "thin pole"])
        await _aclose(backend)
        return first, again, choice

    first, again, choice = asyncio.run(calls())
    chats = [r for r in fake_server.requests if r["body"].get("messages")]
    # every request carried the key from the environment, and only as the bearer token
    assert chats and all(r["auth"] == f"Bearer {KEY}" for r in fake_server.requests)
    assert KEY not in json.dumps([r["body"] for r in chats])
    # the 429 was retried after the server's Retry-After (1 s), not the 0.01 s backoff
    assert chats[1]["time"] - chats[0]["time"] >= 0.9
    assert first.parsed == {
        "trajectory": "drove straight ahead",
        "failure_reason": "hit a glass door it could not see",
    }
    assert (
        first.usage.prompt_tokens == PROMPT_TOKENS
        and first.usage.completion_tokens == COMPLETION_TOKENS
    )
    assert again.cached and choice.parsed == "glass door"
    assert len(chats) == 3  # 429 + JSON answer + choice answer; the repeat never left the machine
    assert metered.fresh_calls == 2

    usage = read_usage(tmp_path / "sub")
    # the cached repeat is the same call: counted once, at the usage it first cost
    assert usage["calls"] == 2
    assert (
        usage["prompt_tokens"] == 2 * PROMPT_TOKENS
        and usage["completion_tokens"] == 2 * COMPLETION_TOKENS
    )
    assert usage["stages"]["reason"]["calls"] == 1 and usage["stages"]["assign"]["calls"] == 1
    cost = cost_summary(
        CostRecord(
            calls=usage["calls"],
            prompt_tokens=usage["prompt_tokens"],
            completion_tokens=usage["completion_tokens"],
            episodes=1,
        ),
        prompt_usd_per_mtok=cfg.price_prompt_usd_per_1m_tokens,
        completion_usd_per_mtok=cfg.price_completion_usd_per_1m_tokens,
    )
    assert cost["usd"] == pytest.approx((240 * 2.5 + 60 * 10.0) / 1e6)
    assert cost["usd_per_1k_episodes"] == pytest.approx(1000 * (240 * 2.5 + 60 * 10.0) / 1e6)


def test_rate_limit_that_never_ends_is_recorded_as_a_backend_error(
    tmp_path, fake_server, monkeypatch
):
    monkeypatch.setenv("FAILTAX_TEST_HOSTED_KEY", KEY)
    _, backend = make_backend_from(hosted_reasoner(tmp_path, fake_server))
    metered = MeteredBackend(lambda: _ready(backend), "hosted-model", tmp_path / "sub" / USAGE_FILE)
    fake_server.rate_limits = 100
    from serving.protocol import BackendError

    async def call():
        try:
            await metered.complete_json([{"role": "user", "content": "x"}], SCHEMA, max_tokens=32)
        finally:
            await _aclose(backend)

    with pytest.raises(BackendError, match="429"):
        asyncio.run(call())
    usage = read_usage(tmp_path / "sub")
    assert usage["backend_errors"] == 1 and usage["calls"] == 0

    # the rate limit is over: a rerun (a new invocation) gets the answer, and the old error
    # no longer counts
    fake_server.rate_limits = 0
    _, backend = make_backend_from(hosted_reasoner(tmp_path, fake_server))
    metered = MeteredBackend(lambda: _ready(backend), "hosted-model", tmp_path / "sub" / USAGE_FILE)
    metered.invocation = "9" + metered.invocation  # strictly later, whatever the clock says
    fake_server.requests.clear()
    asyncio.run(call())
    usage = read_usage(tmp_path / "sub")
    assert usage["backend_errors"] == 0 and usage["calls"] == 1


def test_missing_api_key_is_refused_before_any_work(tmp_path, fake_server, monkeypatch):
    monkeypatch.delenv("FAILTAX_TEST_MISSING_KEY", raising=False)
    monkeypatch.setenv("FAILTAX_TEST_HOSTED_KEY", KEY)
    from failtax.config import load_config

    good = hosted_reasoner(tmp_path, fake_server, name="fine")
    bad = hosted_reasoner(tmp_path, fake_server, name="keyless", key_env="FAILTAX_TEST_MISSING_KEY")
    run_dir = tmp_path / "cmp"
    with pytest.raises(MissingApiKey, match=r"\$FAILTAX_TEST_MISSING_KEY") as err:
        CompareRun(load_config(None), [good, bad], run_dir, episodes=tmp_path)
    assert "reasoner keyless" in str(err.value) and "reasoner fine" not in str(err.value)
    assert not run_dir.exists() and fake_server.requests == []
    # an empty variable is as good as unset
    monkeypatch.setenv("FAILTAX_TEST_MISSING_KEY", "")
    cfgs = {"keyless": resolve_pipeline_config(load_config(None), load_reasoner(bad))}
    assert missing_api_keys(cfgs) == [("keyless", "FAILTAX_TEST_MISSING_KEY")]


def test_cli_names_the_missing_variable(tmp_path, fake_server, monkeypatch):
    from click.testing import CliRunner

    from failtax.cli import main

    monkeypatch.delenv("FAILTAX_TEST_MISSING_KEY", raising=False)
    bad = hosted_reasoner(tmp_path, fake_server, name="keyless", key_env="FAILTAX_TEST_MISSING_KEY")
    local = Path(__file__).resolve().parents[2] / "configs" / "reasoners" / "embedded.yaml"
    result = CliRunner().invoke(
        main,
        [
            "compare",
            str(tmp_path),
            "--reasoner",
            str(local),
            "--reasoner",
            str(bad),
            "--run-dir",
            str(tmp_path / "cmp"),
        ],
    )
    assert result.exit_code == 2, result.output
    assert "FAILTAX_TEST_MISSING_KEY" in result.output and "nothing was run" in result.output
    assert not (tmp_path / "cmp").exists()


async def _ready(backend):
    return backend


async def _aclose(backend):
    close = getattr(backend, "aclose", None)
    if close is not None:
        await close()


def test_hosted_reasoners_through_compare_count_tokens_and_money(
    tmp_path, fake_server, monkeypatch, tiny_episodes
):
    """Two hosted reasoners (different prices) through `CompareRun` and serving's real client."""
    from failtax.compare.config import CompareConfig, EmbeddingConfig
    from failtax.config import load_config

    monkeypatch.setenv("FAILTAX_TEST_HOSTED_KEY", KEY)
    cheap = hosted_reasoner(tmp_path, fake_server, name="cheap")
    dear = hosted_reasoner(tmp_path, fake_server, name="dear")
    dear.write_text(dear.read_text().replace("2.5", "5.0").replace("10.0", "20.0"))
    base = load_config(
        None,
        {
            "cache_dir": str(tmp_path / "calls"),
            "downsample.embedder": "descriptor",
            "discovery.embedding.kind": "hashing",
            "assignment.embedding.kind": "hashing",
            "discovery.num_modes": 2,
        },
    )

    def run():
        return CompareRun(
            base,
            [cheap, dear],
            tmp_path / "cmp",
            episodes=tiny_episodes,
            progress=False,
            settings=CompareConfig(embedding=EmbeddingConfig(kind="hashing")),
        ).run()

    first = run()
    chats = [r for r in fake_server.requests if r["body"].get("messages")]
    assert chats and all(r["auth"] == f"Bearer {KEY}" for r in fake_server.requests)
    by_name = {r["name"]: r["cost"] for r in first["reasoners"]}
    # the two reasoners send identical requests to the same model: the second is served by the cache
    assert by_name["cheap"]["calls"] == by_name["dear"]["calls"] == len(chats)
    assert first["this_invocation"]["model_calls"] == {"cheap": len(chats), "dear": 0}
    for name, (p_in, p_out) in (("cheap", (2.5, 10.0)), ("dear", (5.0, 20.0))):
        c = by_name[name]
        assert c["prompt_tokens"] == PROMPT_TOKENS * len(chats)
        assert c["completion_tokens"] == COMPLETION_TOKENS * len(chats)
        usd = (c["prompt_tokens"] * p_in + c["completion_tokens"] * p_out) / 1e6
        assert c["usd"] == pytest.approx(usd) and c["usd_per_1k_episodes"] == pytest.approx(
            usd * 1000 / 6
        )
        assert c["parse_failures"] == 0
    assert by_name["dear"]["usd"] == pytest.approx(2 * by_name["cheap"]["usd"])
    assert "$" in (tmp_path / "cmp" / "comparison.md").read_text()

    fake_server.requests.clear()
    second = run()
    assert fake_server.requests == [] and second["this_invocation"]["model_calls"] == {
        "cheap": 0,
        "dear": 0,
    }
