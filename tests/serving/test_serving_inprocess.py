"""The in-process transformers backend on the real embedded model, and the
factory's choices (including the fallback when no server environment exists)."""

from __future__ import annotations

import asyncio

import pytest

from serving.config import BackendConfig
from serving.embedded import embedded_model_dir, embedded_model_ready

pytestmark = pytest.mark.skipif(
    not embedded_model_ready(),
    reason="embedded model not converted; run bash scripts/setup_server_env.sh",
)

SCHEMA = {
    "type": "object",
    "properties": {
        "obstacle": {"type": "string", "maxLength": 20},
        "kind": {"enum": ["transparent", "thin", "other"]},
    },
    "required": ["obstacle", "kind"],
}


@pytest.fixture(scope="module")
def local(request):
    import torch

    from serving.inprocess import TransformersBackend

    threads = torch.get_num_threads()
    backend = TransformersBackend(embedded_model_dir(), device="cpu", max_batch=4, threads=1)
    yield backend
    backend.close()
    torch.set_num_threads(threads)  # the option is process-wide; leave other tests as found


def msgs(i: int) -> list[dict]:
    return [{"role": "user", "content": f"Episode {i}: the robot hit a glass door. What happened?"}]


def test_batched_greedy_equals_one_at_a_time(local):
    alone = [asyncio.run(local.complete(msgs(i), max_tokens=8)).text for i in range(3)]

    async def together():
        return await asyncio.gather(*[local.complete(msgs(i), max_tokens=8) for i in range(3)])

    assert [r.text for r in asyncio.run(together())] == alone


def test_json_and_choice_are_always_valid(local):
    r = asyncio.run(local.complete_json(msgs(1), SCHEMA, max_tokens=60))
    assert r.error is None and r.parsed["kind"] in ("transparent", "thin", "other")
    c = asyncio.run(local.complete_choice(msgs(1), ["transparent", "thin", "other"]))
    assert c.parsed in ("transparent", "thin", "other") and c.call_id != r.call_id
    assert abs(sum(c.choice_probs.values()) - 1) < 1e-3
    assert c.choice_probs[c.parsed] == max(c.choice_probs.values())


def test_too_small_max_tokens_is_reported(local):
    r = asyncio.run(local.complete_json(msgs(2), SCHEMA, max_tokens=3))
    assert r.parsed is None and "max_tokens=3" in r.error


def test_text_model_refuses_images(local):
    bad = [{"role": "user", "content": [{"type": "image", "image": b"x"}]}]
    with pytest.raises(ValueError, match="text model"):
        asyncio.run(local.complete(bad, max_tokens=4))


def test_factory_falls_back_in_process_when_no_server_env(tmp_path, capsys, monkeypatch):
    import torch

    from serving import make_backend
    from serving.cache import CachedBackend
    from serving.inprocess import TransformersBackend

    threads = torch.get_num_threads()
    monkeypatch.delenv("FAILTAX_SERVER_PYTHON", raising=False)
    cfg = BackendConfig(
        kind="embedded",
        recipe="embedded",  # SmolLM2: the 1.5B default would take minutes to load in process
        server_python=str(tmp_path / "no-python"),
        cache_dir=str(tmp_path / "c"),
        cpu_threads=1,
    )
    backend = make_backend(cfg)
    try:
        assert isinstance(backend, CachedBackend) and isinstance(backend.inner, TransformersBackend)
        assert "running the embedded model in process" in capsys.readouterr().err
        r = asyncio.run(backend.complete_choice(msgs(3), ["yes", "no"]))
        assert r.parsed in ("yes", "no") and backend.stats.calls == 1
    finally:
        backend.close()
        torch.set_num_threads(threads)
    with pytest.raises(Exception, match="does not exist"):
        make_backend(cfg.model_copy(update={"fallback_to_inprocess": False}))


def test_factory_openai_kind_asks_the_server_for_its_model(tmp_path):
    from serving_stub_server import StubServer

    from serving import make_backend

    with StubServer([("reply", "hi")]) as stub:
        backend = make_backend(BackendConfig(kind="openai", base_url=stub.base_url, cache=False))
        assert backend.model_id == "stub-model"
        assert asyncio.run(backend.complete(msgs(0), max_tokens=4)).text == "hi"


def test_factory_rejects_unknown_recipe():
    from serving import make_backend

    with pytest.raises(ValueError, match="valid:"):
        make_backend(BackendConfig(kind="transformers", recipe="nope"))
