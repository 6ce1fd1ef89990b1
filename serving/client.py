"""One async client for any OpenAI-compatible chat endpoint.

vLLM, SGLang, llama.cpp server, and hosted OpenAI- or Gemini-compatible
endpoints all speak `POST /v1/chat/completions`. What differs is how (and
whether) they constrain output to a JSON schema or a choice list, so the
client detects that once per backend:

- vLLM >= 0.12: the `structured_outputs` request field (`json`, `choice`);
  older vLLM: `guided_json` / `guided_choice`.
- others: `response_format: {"type": "json_schema", ...}`.
- an endpoint that rejects those with a 4xx, or `structured_outputs: prompt`
  in the config: the schema goes into the prompt, the answer is parsed after
  stripping fences and <think> blocks, and re-asked once with the parse error.

Every answer is validated against the schema here, at the boundary, whatever
the server promised. Transport errors, 5xx and 429 are retried with
exponential backoff (429 honours Retry-After); a managed server that died is
reported with its log tail instead of being retried.

Request timeouts are sized per request: `timeout_s` is the floor, and a recipe
with a measured speed (`Recipe.speed`) raises it to what `max_tokens` needs at
that speed with `concurrency` requests in flight, times `TIMEOUT_SAFETY`. A
fixed timeout is wrong both ways on CPU: a 1,400-token answer from the 1.5B
model takes ~5 minutes when four run at once, so a 300 s limit fires and the
retry redoes the whole generation; a limit big enough for that would make a
hung short call wait as long. (Streaming would also avoid the timeout, but
every backend would then need an SSE parser and usage accounting for a gain
that sizing already gives.)
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import logging
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx

from serving.cache import call_key
from serving.images import count_images, messages_to_openai
from serving.protocol import BackendError, CallResult, Message, Usage
from serving.structured import (
    CHOICE_TOP_LOGPROBS,
    append_to_last_user,
    cap_schema,
    choice_probabilities,
    choice_prompt_instruction,
    first_token_alternatives,
    json_prompt_instruction,
    match_choice,
    parse_json_answer,
    reask_message,
    schema_token_budget,
)

if TYPE_CHECKING:
    from serving.launcher import ServerHandle
    from serving.recipes import Recipe

log = logging.getLogger(__name__)

# Dialects of structured output, detected per endpoint.
VLLM = "vllm"  # structured_outputs={"json": ...} / {"choice": [...]}
VLLM_GUIDED = "vllm_guided"  # vLLM < 0.12: guided_json / guided_choice
RESPONSE_FORMAT = "response_format"  # OpenAI json_schema response format
PROMPT = "prompt"  # no constraint: instruct, parse, re-ask once

# Headroom over a recipe's measured speed: a loaded machine, long contexts (measured:
# 4 streams of 1,400 tokens got 4.5 tokens/s each where the interpolation says 6.5).
TIMEOUT_SAFETY = 3.0
_CHARS_PER_TOKEN = 3  # prompt size estimate; real tokenizers average ~4 on English
_TOKENS_PER_IMAGE = 1_300  # up to 640 visual tokens plus margin, per image


@dataclass
class _Reply:
    text: str
    finish_reason: str | None
    usage: Usage
    # the first answer token's alternatives, when logprobs were asked for
    alternatives: list[dict[str, Any]] | None = None


class OpenAICompatBackend:
    """An `LLMBackend` over HTTP.

    Args:
        base_url: endpoint root including `/v1`, e.g. "http://127.0.0.1:8000/v1".
        model: the served model name sent with each request.
        api_key_env: name of the environment variable holding the key (or None).
        concurrency: most requests in flight at once.
        timeout_s: per-request timeout.
        retries: extra attempts after a transport error, 5xx or 429.
        backoff_s: first retry delay, doubled per attempt (a 429's Retry-After wins).
        structured_outputs: "auto" (detect), "json_schema" (server-side, no probing),
            or "prompt" (never ask the server to constrain).
        recipe: gives image pixel bounds and the images-per-prompt limit.
        server: the managed server behind `base_url`, if we launched it; its death
            is reported with its log tail.
        owns_server: `close()` stops `server` (set when this backend launched it).
        max_string_length: `maxLength` given to schema strings that have none.
        max_array_items: `maxItems` given to schema arrays that have none.
        weights_digest: what identifies the served weights, part of every cache key
            (`serving.cache.weights_fingerprint` of the folder a launched server loads,
            or the `root` an attached server's `/v1/models` reports); None if unknown.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key_env: str | None = None,
        concurrency: int = 8,
        timeout_s: float = 300.0,
        retries: int = 3,
        backoff_s: float = 1.0,
        structured_outputs: str = "auto",
        recipe: Recipe | None = None,
        server: ServerHandle | None = None,
        owns_server: bool = False,
        max_string_length: int = 400,
        max_array_items: int = 16,
        weights_digest: str | None = None,
    ) -> None:
        if structured_outputs not in ("auto", "json_schema", "prompt"):
            raise ValueError(
                "structured_outputs must be auto | json_schema | prompt, "
                f"not {structured_outputs!r}"
            )
        self.base_url = base_url.rstrip("/")
        self.model_id = model
        self.concurrency = concurrency
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self.structured_outputs = structured_outputs
        self.recipe = recipe
        self.server = server
        self.owns_server = owns_server
        self.max_string_length = max_string_length
        self.max_array_items = max_array_items
        self._headers = {"Content-Type": "application/json"}
        if api_key_env:
            key = os.environ.get(api_key_env)
            if not key:
                raise ValueError(f"environment variable {api_key_env} (the API key) is not set")
            self._headers["Authorization"] = f"Bearer {key}"
        self._dialect: str | None = PROMPT if structured_outputs == "prompt" else None
        self._loop_state: tuple[Any, httpx.AsyncClient, asyncio.Semaphore] | None = None
        self._warned_budget: set[str] = set()
        # A server we launched listens on a fresh port each time: its weights identify it.
        # Any other endpoint is identified by its URL (and the weights it reports, if any).
        launched = server is not None and server.process is not None
        self.cache_scope = {
            "endpoint": "launched" if launched else self.base_url,
            "weights": weights_digest,
        }

    def __repr__(self) -> str:  # never shows the key
        return f"OpenAICompatBackend(base_url={self.base_url!r}, model={self.model_id!r})"

    # -- transport --------------------------------------------------------------------

    def _state(self) -> tuple[httpx.AsyncClient, asyncio.Semaphore]:
        # httpx clients and semaphores belong to one event loop; callers may use
        # several loops in turn (asyncio.run per stage), so keep one per loop.
        loop = asyncio.get_running_loop()
        if self._loop_state is None or self._loop_state[0] is not loop:
            limits = httpx.Limits(
                max_connections=self.concurrency, max_keepalive_connections=self.concurrency
            )
            client = httpx.AsyncClient(
                timeout=httpx.Timeout(self.timeout_s, connect=min(10.0, self.timeout_s)),
                limits=limits,
                headers=self._headers,
            )
            self._loop_state = (loop, client, asyncio.Semaphore(self.concurrency))
        return self._loop_state[1], self._loop_state[2]

    async def aclose(self) -> None:
        """Close connections, and stop the managed server if this backend launched it."""
        if self._loop_state is not None:
            client = self._loop_state[1]
            self._loop_state = None
            with contextlib.suppress(RuntimeError):  # its event loop may be gone already
                await client.aclose()
        if self.server is not None and self.owns_server:
            await asyncio.to_thread(self.server.stop)

    def close(self) -> None:
        """Stop the managed server, if this backend launched it (sync twin of `aclose`)."""
        self._loop_state = None
        if self.server is not None and self.owns_server:
            self.server.stop()

    def _dead_server_error(self) -> BackendError | None:
        if self.server is not None and not self.server.alive():
            return BackendError(self.server.death_report())
        return None

    def request_timeout_s(self, messages: list[Message], max_tokens: int) -> float:
        """Seconds one chat request may take: `timeout_s`, or more when the recipe's
        measured speed says `max_tokens` at this concurrency needs longer."""
        speed = self.recipe.speed if self.recipe is not None else None
        if speed is None:
            return self.timeout_s
        prompt_tokens = estimate_prompt_tokens(messages)
        needed = TIMEOUT_SAFETY * speed.request_s(prompt_tokens, max_tokens, self.concurrency)
        return max(self.timeout_s, needed)

    async def _request(
        self,
        method: str,
        path: str,
        payload: dict | None = None,
        *,
        timeout_s: float | None = None,
    ) -> httpx.Response:
        """One HTTP exchange with retries. Returns any response below 500 except 429.

        `path` is relative to `base_url`; an absolute URL is used as is. `timeout_s`
        overrides the client's timeout for this request."""
        client, semaphore = self._state()
        url = path if path.startswith("http") else self.base_url + path
        timeout = (
            httpx.USE_CLIENT_DEFAULT
            if timeout_s is None
            else httpx.Timeout(timeout_s, connect=min(10.0, timeout_s))
        )
        last = "no attempt made"
        for attempt in range(self.retries + 1):
            delay = self.backoff_s * (2**attempt)
            async with semaphore:
                try:
                    response = await client.request(method, url, json=payload, timeout=timeout)
                except httpx.TransportError as e:  # refused, reset, timeouts
                    dead = self._dead_server_error()
                    if dead is not None:
                        raise dead from e
                    last = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
                    response = None
            if response is not None:
                if response.status_code == 429:
                    delay = _retry_after_s(response) or delay
                    last = f"HTTP 429 (rate limited): {response.text[:200]}"
                elif response.status_code >= 500:
                    last = f"HTTP {response.status_code}: {response.text[:300]}"
                else:
                    return response
            if attempt < self.retries:
                log.warning(
                    "%s %s failed (%s); retry %d/%d in %.1fs",
                    method,
                    path,
                    last,
                    attempt + 1,
                    self.retries,
                    delay,
                )
                await asyncio.sleep(delay)
        raise BackendError(f"{url}: gave up after {self.retries + 1} attempts; last error: {last}")

    async def _chat(
        self,
        messages: list[Message],
        *,
        max_tokens: int,
        temperature: float,
        seed: int,
        extra: dict | None = None,
    ) -> _Reply:
        payload = {
            "model": self.model_id,
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": temperature,
            "seed": seed,
            **(extra or {}),
        }
        response = await self._request(
            "POST",
            "/chat/completions",
            payload,
            timeout_s=self.request_timeout_s(messages, max_tokens),
        )
        if response.status_code >= 400:
            raise _HTTPStatus(response.status_code, response.text[:1000])
        try:
            body = response.json()
            choice = body["choices"][0]
            text = choice["message"].get("content") or ""
        except (ValueError, KeyError, IndexError, TypeError) as e:
            raise BackendError(
                f"{self.base_url}: malformed chat response ({e}): {response.text[:300]}"
            ) from None
        usage = body.get("usage") or {}
        return _Reply(
            text,
            choice.get("finish_reason"),
            Usage(int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)),
            first_token_alternatives(choice),
        )

    # -- capabilities -----------------------------------------------------------------

    async def detect_dialect(self) -> str:
        """How this endpoint takes structured-output constraints (cached after the first call)."""
        if self._dialect is not None:
            return self._dialect
        dialect = RESPONSE_FORMAT
        if self.structured_outputs == "auto" or self.structured_outputs == "json_schema":
            try:
                version = await self._request("GET", _server_root(self.base_url) + "/version")
                if version.status_code == 200 and "version" in version.json():
                    dialect = (
                        VLLM
                        if _version_at_least(version.json()["version"], (0, 12))
                        else VLLM_GUIDED
                    )
                else:
                    models = await self._request("GET", "/models")
                    owners = (
                        {m.get("owned_by") for m in models.json().get("data", [])}
                        if models.status_code == 200
                        else set()
                    )
                    if "vllm" in owners:
                        dialect = VLLM
            except (BackendError, ValueError):
                pass  # unknown server: try the OpenAI response_format and fall back on rejection
        self._dialect = dialect
        log.info("%s: structured outputs via %s", self.base_url, dialect)
        return dialect

    def _prepare(self, messages: list[Message]) -> list[Message]:
        n_images = count_images(messages)
        lo = hi = 0
        if self.recipe is not None:
            if n_images > self.recipe.images_per_prompt:
                raise ValueError(
                    f"{n_images} images in one request, but recipe {self.recipe.name!r} allows "
                    f"{self.recipe.images_per_prompt}; keep fewer frames or raise "
                    "images_per_prompt "
                    "(and the server's --limit-mm-per-prompt)"
                )
            lo, hi = self.recipe.min_pixels, self.recipe.max_pixels
        return messages_to_openai(messages, min_pixels=lo, max_pixels=hi) if n_images else messages

    # -- the Protocol -----------------------------------------------------------------

    async def complete(
        self, messages: list[Message], *, max_tokens: int, temperature: float = 0.0, seed: int = 0
    ) -> CallResult:
        key = call_key(
            self.model_id,
            "complete",
            messages,
            scope=self.cache_scope,
            max_tokens=max_tokens,
            temperature=temperature,
            seed=seed,
        )
        start = time.perf_counter()
        reply = await self._chat_or_raise(
            self._prepare(messages), max_tokens=max_tokens, temperature=temperature, seed=seed
        )
        return CallResult(
            text=reply.text,
            model=self.model_id,
            call_id=key,
            usage=reply.usage,
            latency_s=time.perf_counter() - start,
            finish_reason=reply.finish_reason,
        )

    async def complete_json(
        self,
        messages: list[Message],
        schema: dict[str, Any],
        *,
        max_tokens: int,
        temperature: float = 0.0,
        seed: int = 0,
    ) -> CallResult:
        key = call_key(
            self.model_id,
            "complete_json",
            messages,
            scope=self.cache_scope,
            schema=schema,
            max_tokens=max_tokens,
            temperature=temperature,
            seed=seed,
        )
        sent_schema = cap_schema(
            schema, max_string_length=self.max_string_length, max_items=self.max_array_items
        )
        self._check_budget(sent_schema, max_tokens)
        prepared = self._prepare(messages)
        start = time.perf_counter()
        dialect = await self.detect_dialect()
        reply = None
        if dialect != PROMPT:
            try:
                reply = await self._chat(
                    prepared,
                    max_tokens=max_tokens,
                    temperature=temperature,
                    seed=seed,
                    extra=_json_constraint(dialect, sent_schema),
                )
            except _HTTPStatus as e:
                if not _rejects_constraint(e):
                    raise BackendError(
                        f"{self.base_url}: HTTP {e.status}: {e.body[:500]}"
                    ) from None
                if self.structured_outputs == "json_schema":
                    raise BackendError(
                        f"{self.base_url} rejected the JSON-schema constraint "
                        f"(HTTP {e.status}: {e.body[:300]}); "
                        "set backend.structured_outputs: prompt (or auto) for this endpoint"
                    ) from None
                log.warning(
                    "%s rejected structured outputs (HTTP %d); "
                    "asking for JSON in the prompt instead",
                    self.base_url,
                    e.status,
                )
                self._dialect = dialect = PROMPT
        if reply is None:
            prepared = append_to_last_user(prepared, json_prompt_instruction(sent_schema))
            reply = await self._chat_or_raise(
                prepared, max_tokens=max_tokens, temperature=temperature, seed=seed
            )
        usage = Usage(reply.usage.prompt_tokens, reply.usage.completion_tokens)
        parsed, error = parse_json_answer(reply.text, schema)
        attempts = 1
        if error is not None:
            error = _explain_length(error, reply, max_tokens)
            attempts = 2
            followup = prepared + [
                {"role": "assistant", "content": reply.text},
                reask_message(error, schema),
            ]
            extra = _json_constraint(dialect, sent_schema) if dialect != PROMPT else None
            reply = await self._chat_or_raise(
                followup, max_tokens=max_tokens, temperature=temperature, seed=seed, extra=extra
            )
            usage.prompt_tokens += reply.usage.prompt_tokens
            usage.completion_tokens += reply.usage.completion_tokens
            parsed, error = parse_json_answer(reply.text, schema)
            if error is not None:
                error = _explain_length(error, reply, max_tokens)
        return CallResult(
            text=reply.text,
            model=self.model_id,
            call_id=key,
            usage=usage,
            latency_s=time.perf_counter() - start,
            finish_reason=reply.finish_reason,
            parsed=parsed,
            error=error,
            attempts=attempts,
        )

    async def complete_choice(
        self,
        messages: list[Message],
        choices: list[str],
        *,
        temperature: float = 0.0,
        seed: int = 0,
    ) -> CallResult:
        if not choices:
            raise ValueError("complete_choice needs at least one choice")
        key = call_key(
            self.model_id,
            "complete_choice",
            messages,
            scope=self.cache_scope,
            choices=list(choices),
            temperature=temperature,
            seed=seed,
        )
        # enough for the longest choice even at one token per character, plus a little prose
        max_tokens = max(len(c) for c in choices) + 16
        prepared = self._prepare(messages)
        start = time.perf_counter()
        dialect = await self.detect_dialect()
        reply = None
        if dialect in (VLLM, VLLM_GUIDED):
            extra = choice_constraint(dialect, choices)
            try:
                reply = await self._chat(
                    prepared, max_tokens=max_tokens, temperature=temperature, seed=seed, extra=extra
                )
            except _HTTPStatus as e:
                if not _rejects_constraint(e):
                    raise BackendError(
                        f"{self.base_url}: HTTP {e.status}: {e.body[:500]}"
                    ) from None
        if reply is None:
            # response_format endpoints get the list in the prompt: an enum-in-object schema
            # would change the answer's shape for no gain in reliability.
            prepared = append_to_last_user(prepared, choice_prompt_instruction(choices))
            reply = await self._chat_or_raise(
                prepared, max_tokens=max_tokens, temperature=temperature, seed=seed
            )
        usage = Usage(reply.usage.prompt_tokens, reply.usage.completion_tokens)
        parsed = match_choice(reply.text, choices)
        probs = choice_probabilities(reply.alternatives, choices) if parsed is not None else None
        attempts, error = 1, None
        if parsed is None:
            attempts = 2
            error = f"the answer {reply.text[:80]!r} is not one of the options {choices}"
            followup = prepared + [
                {"role": "assistant", "content": reply.text},
                reask_message(error),
            ]
            reply = await self._chat_or_raise(
                followup, max_tokens=max_tokens, temperature=temperature, seed=seed
            )
            usage.prompt_tokens += reply.usage.prompt_tokens
            usage.completion_tokens += reply.usage.completion_tokens
            parsed = match_choice(reply.text, choices)
            error = (
                None
                if parsed is not None
                else f"the answer {reply.text[:80]!r} is not one of {choices}"
            )
        return CallResult(
            text=reply.text,
            model=self.model_id,
            call_id=key,
            usage=usage,
            latency_s=time.perf_counter() - start,
            finish_reason=reply.finish_reason,
            parsed=parsed,
            error=error,
            attempts=attempts,
            choice_probs=probs,
        )

    async def _chat_or_raise(self, messages: list[Message], **kw: Any) -> _Reply:
        try:
            return await self._chat(messages, **kw)
        except _HTTPStatus as e:
            raise BackendError(f"{self.base_url}: HTTP {e.status}: {e.body[:500]}") from None

    def _check_budget(self, schema: dict[str, Any], max_tokens: int) -> None:
        budget = schema_token_budget(schema)
        if budget > max_tokens:
            sig = f"{id(schema)}:{max_tokens}"
            if sig not in self._warned_budget:
                self._warned_budget.add(sig)
                log.warning(
                    "max_tokens=%d may not cover this schema (worst case ~%d tokens); "
                    "answers that hit "
                    "the limit fail to parse. Lower maxLength/maxItems or raise max_tokens.",
                    max_tokens,
                    budget,
                )


class _HTTPStatus(Exception):
    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.body = body


def estimate_prompt_tokens(messages: list[Message]) -> int:
    """A generous estimate of a request's prompt tokens, without a tokenizer."""
    chars = 0
    images = 0
    for message in messages:
        content = message.get("content")
        parts = content if isinstance(content, list) else [content]
        for part in parts:
            if isinstance(part, str):
                chars += len(part)
            elif isinstance(part, dict) and isinstance(part.get("text"), str):
                chars += len(part["text"])
            elif isinstance(part, dict):
                images += 1
    return chars // _CHARS_PER_TOKEN + images * _TOKENS_PER_IMAGE


def _json_constraint(dialect: str, schema: dict[str, Any]) -> dict[str, Any]:
    if dialect == VLLM:
        return {"structured_outputs": {"json": schema}}
    if dialect == VLLM_GUIDED:
        return {"guided_json": schema}
    return {
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "answer", "schema": schema, "strict": False},
        }
    }


def choice_constraint(dialect: str, choices: list[str]) -> dict[str, Any]:
    """Request fields that constrain a vLLM answer to one of `choices` and return the
    first token's alternatives (serving.structured.choice_probabilities)."""
    key = ({"structured_outputs": {"choice": list(choices)}} if dialect == VLLM
           else {"guided_choice": list(choices)})
    return {**key, "logprobs": True, "top_logprobs": CHOICE_TOP_LOGPROBS}


def _rejects_constraint(e: _HTTPStatus) -> bool:
    """A 4xx that says the endpoint does not take our structured-output fields."""
    if not 400 <= e.status < 500 or e.status in (401, 403, 404, 408):
        return False
    body = e.body.lower()
    return any(
        w in body
        for w in (
            "response_format",
            "json_schema",
            "structured",
            "guided",
            "grammar",
            "unrecognized",
            "extra",
            "not supported",
            "unsupported",
        )
    )


def _explain_length(error: str, reply: _Reply, max_tokens: int) -> str:
    if reply.finish_reason == "length":
        return f"{error} (answer cut off at max_tokens={max_tokens})"
    return error


def _retry_after_s(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
        return max(0.0, when.timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _server_root(base_url: str) -> str:
    return base_url.removesuffix("/v1")


def _version_at_least(version: str, floor: tuple[int, int]) -> bool:
    parts = []
    for piece in version.split(".")[:2]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts) >= floor
