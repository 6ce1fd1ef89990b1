"""Request timeouts sized from max_tokens and the recipe's measured speed."""

from __future__ import annotations

import asyncio

import pytest
from serving_stub_server import StubServer

from serving.client import TIMEOUT_SAFETY, OpenAICompatBackend, estimate_prompt_tokens
from serving.protocol import BackendError
from serving.recipes import MeasuredSpeed, get_recipe

MSG = [{"role": "user", "content": "x" * 3000}]  # ~1,000 prompt tokens by the estimate


def test_per_stream_speed_interpolates_the_measurements():
    speed = MeasuredSpeed(
        single_stream_tokens_per_s=10.0, aggregate_tokens_per_s=45.0,
        aggregate_concurrency=8, prefill_tokens_per_s=500.0,
    )
    assert speed.per_stream_tokens_per_s(1) == pytest.approx(10.0)
    assert speed.per_stream_tokens_per_s(8) == pytest.approx(45.0 / 8)
    assert speed.per_stream_tokens_per_s(4) == pytest.approx((10 + 3 / 7 * 35) / 4)
    assert speed.per_stream_tokens_per_s(16) == pytest.approx(45.0 / 16)  # flat beyond
    assert speed.per_stream_tokens_per_s(0) == pytest.approx(10.0)
    # prefill of every prompt in flight, then the new tokens at the per-stream speed
    assert speed.request_s(1000, 100, 1) == pytest.approx(2.0 + 10.0)
    assert speed.request_s(1000, 450, 8) == pytest.approx(8 * 2.0 + 80.0)


def test_estimate_counts_text_and_images():
    msgs = [
        {"role": "system", "content": "a" * 30},
        {"role": "user", "content": [{"type": "text", "text": "b" * 60}, {"type": "image_url"}]},
    ]
    assert estimate_prompt_tokens(msgs) == 30 + 1300


def test_the_1_5b_model_at_4_streams_outlasts_a_1400_token_answer():
    """Measured: 4 concurrent 1,400-token generations get ~4.5 tokens/s each, ~311 s,
    where the old fixed 300 s fired and the retry redid the whole generation."""
    b = OpenAICompatBackend("http://127.0.0.1:1/v1", "m", concurrency=4, timeout_s=300,
                            recipe=get_recipe("qwen2.5-coder-1.5b"))
    measured_s = 1400 / 4.5
    timeout = b.request_timeout_s(MSG, 1400)
    assert timeout > 1.5 * measured_s
    assert timeout < 20 * 60  # a hung server is still noticed within minutes
    # a short answer keeps the configured floor
    assert b.request_timeout_s(MSG, 8) == 300
    # more streams in flight, each slower: the limit grows with concurrency
    wide = OpenAICompatBackend("http://127.0.0.1:1/v1", "m", concurrency=8, timeout_s=300,
                               recipe=get_recipe("qwen2.5-coder-1.5b"))
    assert wide.request_timeout_s(MSG, 1400) > timeout


def test_timeout_follows_the_formula():
    recipe = get_recipe("qwen2.5-coder-1.5b")
    b = OpenAICompatBackend("http://127.0.0.1:1/v1", "m", concurrency=4, timeout_s=1.0,
                            recipe=recipe)
    expected = TIMEOUT_SAFETY * recipe.speed.request_s(1000, 1400, 4)
    assert b.request_timeout_s(MSG, 1400) == pytest.approx(expected)


def test_without_a_measured_speed_the_configured_timeout_holds():
    plain = OpenAICompatBackend("http://127.0.0.1:1/v1", "m", timeout_s=42)
    assert plain.request_timeout_s(MSG, 4000) == 42
    vision = OpenAICompatBackend("http://127.0.0.1:1/v1", "m", timeout_s=42,
                                 recipe=get_recipe("qwen2.5-vl-7b"))
    assert vision.request_timeout_s(MSG, 4000) == 42


def test_sized_timeout_reaches_the_request():
    # The stub answers after 1.5 s. A 0.3 s floor alone times out; with a recipe whose
    # measured speed says 64 tokens need longer, the same floor lets the answer arrive.
    slow = get_recipe("embedded").model_copy(update={"speed": MeasuredSpeed(
        single_stream_tokens_per_s=20.0, aggregate_tokens_per_s=20.0,
        aggregate_concurrency=1, prefill_tokens_per_s=1e6,
    )})
    with StubServer([("sleep", 1.5)]) as stub:
        sized = OpenAICompatBackend(stub.base_url, "stub-model", timeout_s=0.3, retries=0,
                                    concurrency=1, recipe=slow)
        assert sized.request_timeout_s(MSG, 64) > 1.5
        assert asyncio.run(sized.complete(MSG, max_tokens=64)).text == "late"
        fixed = OpenAICompatBackend(stub.base_url, "stub-model", timeout_s=0.3, retries=0)
        with pytest.raises(BackendError, match="ReadTimeout"):
            asyncio.run(fixed.complete(MSG, max_tokens=64))
