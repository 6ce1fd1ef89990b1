"""The call cache: every model call stored on disk under its content hash.

The key (`call_key`) hashes what determines the answer: the model id, the
messages with image payloads replaced by their hashes, the schema or choice
list, the sampling parameters, the seed, and the backend's scope: which
endpoint answers and which weights it runs (`cache_scope` of the wrapped
backend, see `weights_fingerprint`), so two servers that expose the same model
name never share answers. A rerun of a finished or
interrupted run therefore makes no model call for work already done; only
answers are cached, never failures of the transport (a dead server must not
poison the cache). The key is also the `CallResult.call_id` recorded in runs.

Layout: `<cache_dir>/<key[:2]>/<key>.json`, each written atomically, so any
number of processes may share one cache folder.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common import atomic_write_json, stable_hash
from serving.images import messages_digest_form
from serving.protocol import CallResult, LLMBackend, Message, Usage

log = logging.getLogger(__name__)

CACHE_FORMAT = 2  # bump when the key or the stored record changes meaning

# Small files of a weights folder that change answers (architecture, tokenizer, chat template,
# generation defaults): hashed whole. Weight files are hashed by name, size, head and tail.
_FINGERPRINT_WHOLE = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "chat_template.json",
    "preprocessor_config.json",
    "model.safetensors.index.json",
)
_FINGERPRINT_WEIGHTS = ("*.safetensors", "*.bin", "*.gguf", "*.pt")
_FINGERPRINT_EDGE_BYTES = 1 << 20


def default_cache_dir() -> Path:
    """`${FAILTAX_HOME:-~/.cache/failtax}/calls`."""
    from serving.embedded import failtax_home

    return failtax_home() / "calls"


def weights_fingerprint(model_dir: str | os.PathLike) -> str:
    """A digest of a local weights folder, cheap enough to take at every start.

    Covers the whole of the small files that change answers (config, tokenizer, chat
    template, generation defaults) and, for every weight file, its name, size and the
    sha256 of its first and last MiB: a fine-tuned or re-quantised copy under the same
    name differs there. Reads about 2 MiB per weight file, not the gigabytes.

    Example:
        weights_fingerprint("~/models/Qwen2.5-VL-7B-Instruct")  # "3f9c...", 32 hex digits
    """
    root = Path(os.path.expanduser(model_dir))
    parts: dict[str, Any] = {}
    for name in _FINGERPRINT_WHOLE:
        path = root / name
        if path.is_file():
            parts[name] = hashlib.sha256(path.read_bytes()).hexdigest()
    weight_files = sorted({p for pattern in _FINGERPRINT_WEIGHTS for p in root.glob(pattern)})
    for path in weight_files:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(_FINGERPRINT_EDGE_BYTES)
            f.seek(max(0, size - _FINGERPRINT_EDGE_BYTES))
            tail = f.read(_FINGERPRINT_EDGE_BYTES)
        parts[path.name] = [size, hashlib.sha256(head).hexdigest(), hashlib.sha256(tail).hexdigest()]
    if not parts:
        raise FileNotFoundError(f"{root} holds no model files (config.json, *.safetensors ...)")
    return stable_hash(parts, length=32)


def call_key(
    model_id: str,
    method: str,
    messages: list[Message],
    *,
    scope: dict[str, Any] | None = None,
    **params: Any,
) -> str:
    """Content hash of one request; identical requests share a key across runs and machines.

    Args:
        model_id: the backend's model id.
        method: "complete" | "complete_json" | "complete_choice".
        messages: chat messages; image payloads are hashed, not embedded.
        scope: who answers: the backend's `cache_scope`, e.g. `{"endpoint":
            "http://gpu-box:8000/v1", "weights": "<weights_fingerprint or server root>"}`.
        **params: schema or choices, max_tokens, temperature, seed.
    """
    return stable_hash(
        {
            "format": CACHE_FORMAT,
            "model": model_id,
            "scope": scope or {},
            "method": method,
            "messages": messages_digest_form(messages),
            "params": params,
        },
        length=32,
    )


@dataclass
class CacheStats:
    calls: int = 0  # requests that reached the model
    hits: int = 0  # requests answered from disk
    errors: int = 0  # inner calls that raised (nothing cached)


class CachedBackend:
    """Wraps an `LLMBackend`; answers repeated requests from disk.

    Example:
        backend = CachedBackend(OpenAICompatBackend(...), "~/.cache/failtax/calls")
        r = await backend.complete(msgs, max_tokens=64)   # stats.calls == 1
        r = await backend.complete(msgs, max_tokens=64)   # stats.hits == 1, r.cached
    """

    def __init__(self, inner: LLMBackend, cache_dir: str | os.PathLike | None = None) -> None:
        self.inner = inner
        self.model_id = inner.model_id
        self.scope: dict[str, Any] = dict(getattr(inner, "cache_scope", None) or {})
        self.cache_dir = Path(os.path.expanduser(cache_dir)) if cache_dir else default_cache_dir()
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self.stats = CacheStats()
        self._inflight: dict[str, asyncio.Future] = {}

    def __getattr__(self, name: str) -> Any:
        # settings of the wrapped backend (recipe, server, base_url ...)
        if name == "inner":  # not set yet (copy/unpickle): do not recurse
            raise AttributeError(name)
        return getattr(self.inner, name)

    def _path(self, key: str) -> Path:
        return self.cache_dir / key[:2] / f"{key}.json"

    def _load(self, key: str) -> CallResult | None:
        path = self._path(key)
        try:
            record = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, json.JSONDecodeError) as e:
            log.warning("ignoring unreadable cache entry %s (%s); calling the model again", path, e)
            return None
        fields = record.get("result", {})
        usage = Usage(**fields.pop("usage", {}))
        known = {f.name for f in dataclasses.fields(CallResult)}
        result = CallResult(**{k: v for k, v in fields.items() if k in known}, usage=usage)
        result.cached = True
        return result

    def _store(self, key: str, result: CallResult, request: dict[str, Any]) -> None:
        record = {"format": CACHE_FORMAT, "request": request, "result": dataclasses.asdict(result)}
        record["result"]["cached"] = False
        atomic_write_json(self._path(key), record)

    def get(self, key: str) -> CallResult | None:
        """The answer cached under `key`, or None (batch export/import)."""
        return self._load(key)

    def put(self, key: str, result: CallResult, request: dict[str, Any]) -> None:
        """Cache `result` under `key` with its request record (batch import)."""
        result.call_id = key
        self._store(key, result, request)

    async def _cached(
        self, method: str, messages: list[Message], params: dict[str, Any], call
    ) -> CallResult:
        key = call_key(self.model_id, method, messages, scope=self.scope, **params)
        hit = self._load(key)
        if hit is not None:
            self.stats.hits += 1
            return hit
        # identical requests in flight at once share one model call
        if key in self._inflight:
            result = await asyncio.shield(self._inflight[key])
            self.stats.hits += 1
            return dataclasses.replace(result, cached=True)
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            self.stats.calls += 1
            result = await call()
            result.call_id = key
            request = {
                "model": self.model_id,
                "scope": self.scope,
                "method": method,
                "messages": messages_digest_form(messages),
                "params": params,
            }
            self._store(key, result, request)
            future.set_result(result)
            return result
        except BaseException as e:
            self.stats.errors += 1
            future.set_exception(e)
            future.exception()  # mark retrieved: waiters re-raise it, nobody else must
            raise
        finally:
            del self._inflight[key]

    async def complete(
        self, messages: list[Message], *, max_tokens: int, temperature: float = 0.0, seed: int = 0
    ) -> CallResult:
        params = {"max_tokens": max_tokens, "temperature": temperature, "seed": seed}
        return await self._cached(
            "complete",
            messages,
            params,
            lambda: self.inner.complete(
                messages, max_tokens=max_tokens, temperature=temperature, seed=seed
            ),
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
        params = {
            "schema": schema,
            "max_tokens": max_tokens,
            "temperature": temperature,
            "seed": seed,
        }
        return await self._cached(
            "complete_json",
            messages,
            params,
            lambda: self.inner.complete_json(
                messages, schema, max_tokens=max_tokens, temperature=temperature, seed=seed
            ),
        )

    async def complete_choice(
        self,
        messages: list[Message],
        choices: list[str],
        *,
        temperature: float = 0.0,
        seed: int = 0,
    ) -> CallResult:
        params = {"choices": list(choices), "temperature": temperature, "seed": seed}
        return await self._cached(
            "complete_choice",
            messages,
            params,
            lambda: self.inner.complete_choice(
                messages, choices, temperature=temperature, seed=seed
            ),
        )

    async def aclose(self) -> None:
        close = getattr(self.inner, "aclose", None)
        if close is not None:
            await close()

    def close(self) -> None:
        close = getattr(self.inner, "close", None)
        if close is not None:
            close()
