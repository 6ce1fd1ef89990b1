"""The on-disk call cache: keys, hits, reruns, concurrency, corrupt entries."""

from __future__ import annotations

import asyncio
import io
import json

import pytest
from PIL import Image

from serving.cache import CachedBackend, call_key
from serving.protocol import BackendError, CallResult, Usage


class CountingBackend:
    """Answers with a counter; stands in for a model in control-flow tests only."""

    model_id = "counting"

    def __init__(self, fail: bool = False, delay_s: float = 0.0):
        self.calls = 0
        self.fail = fail
        self.delay_s = delay_s

    async def complete(self, messages, *, max_tokens, temperature=0.0, seed=0):
        self.calls += 1
        await asyncio.sleep(self.delay_s)
        if self.fail:
            raise BackendError("server gone")
        return CallResult(
            text=f"answer {self.calls}", model=self.model_id, call_id="inner", usage=Usage(3, 2)
        )

    async def complete_json(self, messages, schema, *, max_tokens, temperature=0.0, seed=0):
        self.calls += 1
        return CallResult(text='{"a":1}', model=self.model_id, call_id="inner", parsed={"a": 1})

    async def complete_choice(self, messages, choices, *, temperature=0.0, seed=0):
        self.calls += 1
        return CallResult(text=choices[0], model=self.model_id, call_id="inner", parsed=choices[0])


def png(color) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(buf, format="PNG")
    return buf.getvalue()


def msgs(text="hi", image=None):
    content = [{"type": "text", "text": text}] + (
        [{"type": "image", "image": image}] if image else []
    )
    return [{"role": "user", "content": content}]


def test_rerun_makes_zero_model_calls(tmp_path):
    async def session():
        b = CachedBackend(CountingBackend(), tmp_path)
        r1 = await b.complete(msgs(), max_tokens=5)
        j1 = await b.complete_json(msgs(), {"type": "object"}, max_tokens=5)
        c1 = await b.complete_choice(msgs(), ["x", "y"])
        return b, (r1, j1, c1)

    first, results = asyncio.run(session())
    assert first.stats.calls == 3 and first.stats.hits == 0
    assert all(r.call_id != "inner" and not r.cached for r in results)
    second, again = asyncio.run(session())
    assert second.stats.calls == 0 and second.stats.hits == 3 and second.inner.calls == 0
    assert [r.text for r in again] == [r.text for r in results]
    assert [r.call_id for r in again] == [r.call_id for r in results]
    assert (
        all(r.cached for r in again)
        and again[1].parsed == {"a": 1}
        and again[0].usage.prompt_tokens == 3
    )


def test_key_covers_model_messages_images_params_seed():
    base = call_key("m", "complete", msgs(image=png("red")), max_tokens=5, seed=0)
    assert base == call_key("m", "complete", msgs(image=png("red")), max_tokens=5, seed=0)
    assert base != call_key("m2", "complete", msgs(image=png("red")), max_tokens=5, seed=0)
    assert base != call_key("m", "complete", msgs(image=png("blue")), max_tokens=5, seed=0)
    assert base != call_key("m", "complete", msgs("other", png("red")), max_tokens=5, seed=0)
    assert base != call_key("m", "complete", msgs(image=png("red")), max_tokens=6, seed=0)
    assert base != call_key("m", "complete", msgs(image=png("red")), max_tokens=5, seed=1)
    assert base != call_key("m", "complete_json", msgs(image=png("red")), max_tokens=5, seed=0)


def test_images_are_hashed_not_stored(tmp_path):
    b = CachedBackend(CountingBackend(), tmp_path)
    asyncio.run(b.complete(msgs(image=png("red")), max_tokens=5))
    entry = next(tmp_path.rglob("*.json"))
    record = json.loads(entry.read_text())
    assert record["request"]["messages"][0]["content"][1]["image"].startswith("sha256:")
    assert entry.stat().st_size < 2000


def test_identical_concurrent_requests_share_one_call(tmp_path):
    async def burst():
        b = CachedBackend(CountingBackend(delay_s=0.1), tmp_path)
        rs = await asyncio.gather(*[b.complete(msgs(), max_tokens=5) for _ in range(5)])
        return b, rs

    b, rs = asyncio.run(burst())
    assert b.inner.calls == 1 and b.stats.calls == 1 and b.stats.hits == 4
    assert len({r.text for r in rs}) == 1


def test_failures_are_not_cached(tmp_path):
    b = CachedBackend(CountingBackend(fail=True), tmp_path)
    with pytest.raises(BackendError):
        asyncio.run(b.complete(msgs(), max_tokens=5))
    assert not list(tmp_path.rglob("*.json")) and b.stats.errors == 1
    b2 = CachedBackend(CountingBackend(), tmp_path)
    asyncio.run(b2.complete(msgs(), max_tokens=5))
    assert b2.stats.calls == 1


def test_corrupt_entry_is_recomputed(tmp_path):
    b = CachedBackend(CountingBackend(), tmp_path)
    asyncio.run(b.complete(msgs(), max_tokens=5))
    entry = next(tmp_path.rglob("*.json"))
    entry.write_text('{"truncated": ')
    b2 = CachedBackend(CountingBackend(), tmp_path)
    r = asyncio.run(b2.complete(msgs(), max_tokens=5))
    assert b2.stats.calls == 1 and not r.cached
    json.loads(entry.read_text())  # rewritten whole


class ScopedBackend(CountingBackend):
    """A counting backend that says which endpoint and weights answer."""

    def __init__(self, endpoint: str, weights: str | None = None):
        super().__init__()
        self.cache_scope = {"endpoint": endpoint, "weights": weights}


def test_same_model_name_on_other_endpoint_or_weights_is_not_a_hit(tmp_path):
    """Two servers exposing the same served name must not share answers."""

    async def ask(inner):
        b = CachedBackend(inner, tmp_path)
        r = await b.complete(msgs(), max_tokens=5)
        return b.stats, r

    async def main():
        stats, first = await ask(ScopedBackend("http://gpu-a:8000/v1", "w1"))
        assert stats.calls == 1
        stats, again = await ask(ScopedBackend("http://gpu-a:8000/v1", "w1"))
        assert (stats.calls, stats.hits) == (0, 1) and again.call_id == first.call_id
        stats, other_host = await ask(ScopedBackend("http://gpu-b:8000/v1", "w1"))
        assert (stats.calls, stats.hits) == (1, 0) and other_host.call_id != first.call_id
        stats, other_weights = await ask(ScopedBackend("http://gpu-a:8000/v1", "w2"))
        assert (stats.calls, stats.hits) == (1, 0)
        assert other_weights.call_id not in (first.call_id, other_host.call_id)

    asyncio.run(main())


def test_key_covers_scope():
    base = call_key("m", "complete", msgs(), scope={"endpoint": "a", "weights": "w"}, seed=0)
    assert base != call_key("m", "complete", msgs(), scope={"endpoint": "b", "weights": "w"}, seed=0)
    assert base != call_key("m", "complete", msgs(), scope={"endpoint": "a", "weights": "v"}, seed=0)
    assert base != call_key("m", "complete", msgs(), seed=0)


def test_weights_fingerprint_follows_config_and_weights(tmp_path):
    from serving.cache import weights_fingerprint

    model = tmp_path / "m"
    model.mkdir()
    (model / "config.json").write_text('{"hidden_size": 8}')
    (model / "model.safetensors").write_bytes(bytes(range(256)) * 20_000)
    first = weights_fingerprint(model)
    assert weights_fingerprint(model) == first
    (model / "model.safetensors").write_bytes(bytes(range(256)) * 19_999 + bytes(255) + b"\x01")
    tuned = weights_fingerprint(model)  # same size, last bytes differ
    assert tuned != first
    (model / "config.json").write_text('{"hidden_size": 16}')
    assert weights_fingerprint(model) not in (first, tuned)
    with pytest.raises(FileNotFoundError, match="no model files"):
        weights_fingerprint(tmp_path / "empty")


def test_factory_scopes_attached_servers_by_url_and_reported_root(tmp_path):
    """`make_backend` gives an attached server's URL and the weights its /v1/models reports."""
    from serving_stub_server import StubServer

    from serving.config import BackendConfig
    from serving.factory import make_backend

    scopes = []
    for root in ("/models/a", "/models/b"):
        with StubServer([("reply", "hi")], root=root) as stub:
            for model in (None, "stub-model"):
                cfg = BackendConfig(kind="openai", base_url=stub.base_url, model=model,
                                    cache_dir=str(tmp_path))
                backend = make_backend(cfg)
                assert backend.scope == {"endpoint": stub.base_url, "weights": root}
                scopes.append(backend.scope)
    assert scopes[0] != scopes[2]
    dead = BackendConfig(kind="openai", base_url="http://127.0.0.1:9/v1", model="m",
                         cache_dir=str(tmp_path))
    assert make_backend(dead).scope == {"endpoint": "http://127.0.0.1:9/v1", "weights": None}
