"""The one seam between failure analysis and models.

Everything in the project that calls a model goes through an `LLMBackend`:
the OpenAI-compatible HTTP client (vLLM, SGLang, llama.cpp server, hosted
endpoints), the in-process transformers backend, and the content-hash cache
that wraps either. `failtax` depends on this module and nothing else in
`serving` except the `make_backend` factory.

Messages follow the OpenAI chat format. An image part may carry raw PNG/JPEG
bytes or a PIL image under "image" (the backend encodes and resizes it to the
recipe's pixel bounds), or an "image_url" already encoded:

    [{"role": "user", "content": [
        {"type": "text", "text": "What happened?"},
        {"type": "image", "image": png_bytes},
    ]}]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

Message = dict[str, Any]


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass
class CallResult:
    """One model call's outcome, as recorded in a run.

    `parsed` is set by `complete_json` / `complete_choice` when the output
    validated against the schema or choice list; `error` says why it did not
    (the caller records a typed failure instead of crashing).
    """

    text: str
    model: str
    call_id: str  # content hash of the request: the cache key
    usage: Usage = field(default_factory=Usage)
    latency_s: float = 0.0
    finish_reason: str | None = None
    parsed: Any = None
    error: str | None = None
    cached: bool = False  # True when answered from the call cache, no model ran
    attempts: int = 1  # 2 when a re-ask with the parse error was needed
    # complete_choice: how probable each choice was as the answer (renormalised over the
    # choices), where the backend exposes token probabilities; None otherwise
    choice_probs: dict[str, float] | None = None


class BackendError(RuntimeError):
    """The backend could not answer at all (dead server, timeouts exhausted)."""


@runtime_checkable
class LLMBackend(Protocol):
    """A chat model. Implementations: serving.client.OpenAICompatBackend,
    serving.inprocess.TransformersBackend, serving.cache.CachedBackend."""

    model_id: str

    async def complete(
        self, messages: list[Message], *, max_tokens: int, temperature: float = 0.0, seed: int = 0
    ) -> CallResult:
        """Free-text completion."""
        ...

    async def complete_json(
        self,
        messages: list[Message],
        schema: dict[str, Any],
        *,
        max_tokens: int,
        temperature: float = 0.0,
        seed: int = 0,
    ) -> CallResult:
        """Completion constrained to (or, without structured-output support,
        asked for and re-asked once for) a JSON schema; `parsed` is the
        validated object or None with `error` set."""
        ...

    async def complete_choice(
        self, messages: list[Message], choices: list[str], *, temperature: float = 0.0, seed: int = 0
    ) -> CallResult:
        """Completion constrained to exactly one of `choices`; `parsed` is it."""
        ...
