"""vLLM batch files: model calls written as OpenAI batch JSONL, answered offline, read back.

The exchange format is the one vLLM's batch runner (`vllm run-batch`, `python -m
vllm.entrypoints.openai.run_batch`) and the OpenAI Batch API read and write:

    request line:  {"custom_id": KEY, "method": "POST", "url": "/v1/chat/completions", "body": {...}}
    result line:   {"id": ..., "custom_id": KEY, "response": {"status_code": 200, "body": {...}},
                    "error": null}

`custom_id` is the call-cache key (`serving.cache.call_key`) the live client would
use for the same call, and the body is the request the live client would send to a
vLLM server launched from the same recipe (`structured_outputs` constraints, image
parts encoded as `image_url`, schema strings capped). The cache scope of a batch is
that of a launched server: `{"endpoint": "launched", "weights": <fingerprint of the
recipe's weights folder>}`, so answers imported from batch results are exactly the
entries an all-live run with the `embedded` backend would have written, and the
normal pipeline then finds every call in the cache.

Pieces:
- `BatchBackend`: an `LLMBackend` with that identity that never calls a model. Each
  call it receives is recorded as a `BatchRequest` (checked against the context
  length first) and answered with `BackendError` saying why there is no answer yet;
  wrapped in `CachedBackend`, it answers from the cache only. Used both to
  enumerate a stage's requests and to run the pipeline after import with zero live
  calls.
- `import_result`: one result line → a `CallResult` to cache, a re-ask (the live
  client re-asks once when a JSON or choice answer does not parse; the batch does
  it as a second round), or an error with why.
- `run_batch_local`: runs vLLM's batch runner on a shard in the server environment,
  resumable: ids already answered are skipped, bad rows never reach vLLM.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from serving.cache import call_key, weights_fingerprint
from serving.client import (
    VLLM,
    OpenAICompatBackend,
    _explain_length,
    _json_constraint,
    _Reply,
    choice_constraint,
    estimate_prompt_tokens,
)
from serving.images import count_images, messages_digest_form
from serving.protocol import BackendError, CallResult, Message, Usage
from serving.recipes import Recipe
from serving.structured import (
    cap_schema,
    choice_probabilities,
    first_token_alternatives,
    match_choice,
    parse_json_answer,
    reask_message,
)

log = logging.getLogger(__name__)

BATCH_URL = "/v1/chat/completions"
BATCH_FORMAT = 1  # bump when request/meta lines change meaning
# Chat-template tokens around each message (role markers, separators): generous for
# ChatML and Llama-style templates.
_TEMPLATE_TOKENS_PER_MESSAGE = 8
_TEMPLATE_TOKENS_FIXED = 16


class BatchFileError(ValueError):
    """A batch file (request, result or meta line) cannot be used; says which and why."""


@dataclass
class BatchRequest:
    """One model call waiting for a batch answer.

    `line` is the OpenAI batch line; the rest is what importing its answer needs
    (the live client's parameters, the cache record of the request, and for a
    re-ask the first answer).
    """

    custom_id: str  # the call-cache key
    method: str  # complete | complete_json | complete_choice
    params: dict[str, Any]  # the call's parameters as in the cache key (schema/choices, ...)
    request: dict[str, Any]  # the cache entry's request record (images as digests)
    body: dict[str, Any]  # the chat/completions body sent
    prompt_tokens: int  # counted (tokenizer) or estimated, see `TokenCounter.how`
    attempt: int = 1  # 2 for the re-ask after an unparseable first answer
    first: dict[str, Any] | None = None  # re-ask: the first answer {text, error, usage}
    context: dict[str, Any] = field(default_factory=dict)  # caller's notes (episode id ...)

    def line(self) -> dict[str, Any]:
        return {"custom_id": self.custom_id, "method": "POST", "url": BATCH_URL, "body": self.body}

    def meta(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out.pop("body")
        out["format"] = BATCH_FORMAT
        return out

    @classmethod
    def from_meta(cls, meta: dict[str, Any], body: dict[str, Any] | None = None) -> BatchRequest:
        fields = {k: v for k, v in meta.items() if k in {f.name for f in dataclasses.fields(cls)}}
        return cls(body=body or {}, **fields)


class TokenCounter:
    """Counts prompt tokens with the model's own tokenizer (`tokenizer.json` in the
    weights folder, read offline), else estimates them conservatively (3 characters a
    token, 1,300 per image; real tokenizers average ~4 on English). `how` says which."""

    def __init__(self, model_dir: str | os.PathLike | None) -> None:
        self._tok = None
        self.how = "estimate: 3 characters per token, 1300 tokens per image"
        path = Path(model_dir) / "tokenizer.json" if model_dir else None
        if path is not None and path.is_file():
            try:
                from tokenizers import Tokenizer

                self._tok = Tokenizer.from_file(str(path))
                self.how = f"tokenizer: {path.parent.name}/tokenizer.json"
            except (ImportError, ValueError, OSError) as e:  # pragma: no cover - broken file
                log.warning("cannot load %s (%s); estimating prompt tokens instead", path, e)

    def count(self, messages: list[Message]) -> int:
        if self._tok is None:
            overhead = _TEMPLATE_TOKENS_FIXED + _TEMPLATE_TOKENS_PER_MESSAGE * len(messages)
            return estimate_prompt_tokens(messages) + overhead
        total = _TEMPLATE_TOKENS_FIXED
        for m in messages:
            total += _TEMPLATE_TOKENS_PER_MESSAGE
            content = m.get("content")
            parts = content if isinstance(content, list) else [content]
            for p in parts:
                text = p if isinstance(p, str) else (p.get("text") if isinstance(p, dict) else None)
                if isinstance(text, str):
                    total += len(self._tok.encode(text, add_special_tokens=False).ids)
                elif isinstance(p, dict):
                    total += estimate_prompt_tokens([{"content": [p]}])  # an image part
        return total


@dataclass
class BatchIdentity:
    """Who answers a batch: the served model name and the cache scope of its weights."""

    model_id: str
    scope: dict[str, Any]
    max_model_len_tokens: int
    model_dir: str | None = None

    @classmethod
    def from_recipe(cls, recipe: Recipe, model_dir: str | os.PathLike | None = None) -> BatchIdentity:
        """The identity of `recipe` served by vLLM from its weights folder (the scope of a
        launched server, so live and batch answers share cache entries)."""
        folder = Path(model_dir) if model_dir else recipe.require_model_dir()
        return cls(
            model_id=recipe.served_name or recipe.name,
            scope={"endpoint": "launched", "weights": weights_fingerprint(folder)},
            max_model_len_tokens=recipe.max_model_len_tokens,
            model_dir=str(folder),
        )


class BatchBackend:
    """An `LLMBackend` that never calls a model: it records each call as a batch request
    and raises `BackendError` saying why no answer exists yet. Wrap it in `CachedBackend`
    (same `cache_scope`) so answered calls come from the cache.

    Args:
        identity: the model and cache scope of the batch runs.
        recipe: image pixel bounds and images per prompt (as the live client uses them).
        known_errors: custom_id → why an earlier batch round gave no answer (shown in
            the `BackendError`, so the run's errors.jsonl says it per episode).
        reasks: custom_id → the first answer of a call whose answer did not parse; the
            call is recorded as the re-ask the live client would send.
        given_up: custom_ids not to request again (repeated error lines): they get
            the `BackendError` with why, and the caller falls back.
        max_string_length, max_array_items: schema caps, as in `OpenAICompatBackend`.
    """

    def __init__(
        self,
        identity: BatchIdentity,
        *,
        recipe: Recipe | None = None,
        known_errors: dict[str, str] | None = None,
        reasks: dict[str, dict[str, Any]] | None = None,
        given_up: set[str] | None = None,
        max_string_length: int = 400,
        max_array_items: int = 16,
    ) -> None:
        self.identity = identity
        self.model_id = identity.model_id
        self.cache_scope = dict(identity.scope)
        self.known_errors = dict(known_errors or {})
        self.reasks = dict(reasks or {})
        self.given_up = set(given_up or ())
        self.counter = TokenCounter(identity.model_dir)
        # the live client's request preparation (image encoding, limits, schema caps)
        self._client = OpenAICompatBackend(
            "http://batch.invalid/v1",
            identity.model_id,
            recipe=recipe,
            max_string_length=max_string_length,
            max_array_items=max_array_items,
        )
        self.recorded: dict[str, BatchRequest] = {}  # waiting for an answer
        self.too_long: dict[str, BatchRequest] = {}  # over the context length: never sent

    # -- the Protocol --------------------------------------------------------------

    async def complete(
        self, messages: list[Message], *, max_tokens: int, temperature: float = 0.0, seed: int = 0
    ) -> CallResult:
        params = {"max_tokens": max_tokens, "temperature": temperature, "seed": seed}
        raise self._record("complete", messages, params, extra=None)

    async def complete_json(
        self,
        messages: list[Message],
        schema: dict[str, Any],
        *,
        max_tokens: int,
        temperature: float = 0.0,
        seed: int = 0,
    ) -> CallResult:
        params = {"schema": schema, "max_tokens": max_tokens, "temperature": temperature, "seed": seed}
        sent = cap_schema(
            schema,
            max_string_length=self._client.max_string_length,
            max_items=self._client.max_array_items,
        )
        raise self._record("complete_json", messages, params, extra=_json_constraint(VLLM, sent))

    async def complete_choice(
        self, messages: list[Message], choices: list[str], *, temperature: float = 0.0, seed: int = 0
    ) -> CallResult:
        if not choices:
            raise ValueError("complete_choice needs at least one choice")
        params = {"choices": list(choices), "temperature": temperature, "seed": seed}
        raise self._record("complete_choice", messages, params, extra=choice_constraint(VLLM, choices))

    # -- recording ------------------------------------------------------------------

    def _record(
        self, method: str, messages: list[Message], params: dict[str, Any], extra: dict | None
    ) -> BackendError:
        key = call_key(self.model_id, method, messages, scope=self.cache_scope, **params)
        max_tokens = params.get("max_tokens") or choice_max_tokens(params.get("choices") or [""])
        prepared = self._client._prepare(messages)
        if count_images(prepared) != count_images(messages) or _non_openai_parts(prepared):
            raise ValueError(f"request {key}: image parts were not encoded for the OpenAI API")
        first = self.reasks.get(key)
        attempt = 1
        if first is not None:  # the re-ask the live client sends after an unusable answer
            attempt = 2
            prepared = prepared + [
                {"role": "assistant", "content": first["text"]},
                reask_message(first["error"], params.get("schema")),
            ]
            if method == "complete_choice":
                extra = None  # the live client re-asks a choice without the constraint
        body = {
            "model": self.model_id,
            "messages": prepared,
            "max_tokens": max_tokens,
            "temperature": params["temperature"],
            "seed": params["seed"],
            **(extra or {}),
        }
        request = {
            "model": self.model_id,
            "scope": self.cache_scope,
            "method": method,
            "messages": messages_digest_form(messages),
            "params": params,
        }
        tokens = self.counter.count(prepared)
        item = BatchRequest(key, method, params, request, body, tokens, attempt, first)
        limit = self.identity.max_model_len_tokens
        if tokens + max_tokens > limit:
            why = (
                f"prompt of {tokens} tokens ({self.counter.how}) + max_tokens {max_tokens} exceeds "
                f"the model's context of {limit} tokens; shorten the input (e.g. "
                "reasoning.scene_text_max_chars) or serve a longer context"
            )
            self.too_long[key] = item
            return BackendError(f"batch request {key}: not sent: {why}")
        known = self.known_errors.get(key)
        if key in self.given_up:
            return BackendError(f"batch request {key}: given up after repeated error lines: {known}")
        self.recorded[key] = item
        if known:
            return BackendError(f"batch request {key}: no answer yet: {known}")
        return BackendError(f"batch request {key}: no answer yet (export it, run the batch, import)")

    async def aclose(self) -> None:
        return None

    def close(self) -> None:
        return None


def choice_max_tokens(choices: list[str]) -> int:
    """The live client's completion budget for a choice (longest choice + prose)."""
    return max(len(c) for c in choices) + 16


def _non_openai_parts(messages: list[Message]) -> bool:
    return any(
        isinstance(p, dict) and p.get("type") not in ("text", "image_url")
        for m in messages
        if isinstance(m.get("content"), list)
        for p in m["content"]
    )


# ----------------------------------------------------------------------------- import


@dataclass
class ImportOutcome:
    """What one result line means: a result to cache, a re-ask to send, or an error."""

    kind: str  # "answer" | "reask" | "error"
    result: CallResult | None = None
    first: dict[str, Any] | None = None  # reask: the first answer
    why: str = ""
    truncated: bool = False  # finish_reason == "length"


def import_result(item: BatchRequest, line: dict[str, Any]) -> ImportOutcome:
    """Turn one batch result line for `item` into what the live client would have made
    of the same response (validation at the boundary, one re-ask, typed errors)."""
    response = line.get("response") or {}
    status = response.get("status_code")
    body = response.get("body")
    if line.get("error") or status not in (200, None) or not isinstance(body, dict):
        error = line.get("error")
        if isinstance(error, dict):
            error = error.get("message") or error.get("error", {}).get("message") or json.dumps(error)[:300]
        return ImportOutcome("error", why=f"error line (HTTP {status}): {str(error or 'no body')[:400]}")
    try:
        choice = body["choices"][0]
        text = choice["message"].get("content") or ""
    except (KeyError, IndexError, TypeError) as e:
        return ImportOutcome("error", why=f"malformed response body ({e!r})")
    usage = body.get("usage") or {}
    reply = _Reply(
        text,
        choice.get("finish_reason"),
        Usage(int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)),
        first_token_alternatives(choice),
    )
    truncated = reply.finish_reason == "length"
    total = Usage(reply.usage.prompt_tokens, reply.usage.completion_tokens)
    if item.first is not None:
        total.prompt_tokens += int(item.first.get("prompt_tokens", 0))
        total.completion_tokens += int(item.first.get("completion_tokens", 0))
    result = CallResult(
        text=reply.text,
        model=item.request["model"],
        call_id=item.custom_id,
        usage=total,
        finish_reason=reply.finish_reason,
        attempts=item.attempt,
    )
    if item.method == "complete":
        return ImportOutcome("answer", result, truncated=truncated)
    if item.method == "complete_json":
        max_tokens = item.params["max_tokens"]
        parsed, error = parse_json_answer(reply.text, item.params["schema"])
        if error is not None:
            error = _explain_length(error, reply, max_tokens)
    else:
        choices = item.params["choices"]
        parsed = match_choice(reply.text, choices)
        error = None if parsed is not None else (
            f"the answer {reply.text[:80]!r} is not one of the options {choices}"
        )
        if parsed is not None and item.attempt == 1:
            result.choice_probs = choice_probabilities(reply.alternatives, choices)
    if error is not None and item.attempt == 1:
        first = {
            "text": reply.text,
            "error": error,
            "prompt_tokens": reply.usage.prompt_tokens,
            "completion_tokens": reply.usage.completion_tokens,
        }
        return ImportOutcome("reask", first=first, why=error, truncated=truncated)
    result.parsed, result.error = parsed, error
    return ImportOutcome("answer", result, why=error or "", truncated=truncated)


# ----------------------------------------------------------------------------- files


def read_jsonl_lines(path: str | os.PathLike) -> Iterator[tuple[int, dict[str, Any] | None, str]]:
    """(line number, object or None when the line is not a JSON object, raw text) per
    non-empty line; a bad line never stops the reading."""
    with open(path, encoding="utf-8", errors="replace") as f:
        for n, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw)
            except json.JSONDecodeError:
                obj = None
            yield n, obj if isinstance(obj, dict) else None, raw


def check_request_line(obj: dict[str, Any] | None) -> str | None:
    """Why a request line cannot go to vLLM's batch runner (None when it can): one bad
    line there stops the whole file, so bad rows are answered as error lines instead."""
    if obj is None:
        return "not a JSON object"
    missing = [k for k in ("custom_id", "method", "url", "body") if k not in obj]
    if missing:
        return f"missing {', '.join(missing)}"
    if obj["url"] != BATCH_URL or obj["method"] != "POST":
        return f"only POST {BATCH_URL} is supported, not {obj['method']} {obj['url']}"
    body = obj["body"]
    if not isinstance(body, dict) or not isinstance(body.get("messages"), list) or not body.get("model"):
        return "body needs model and a list of messages"
    return None


def error_line(custom_id: str, why: str, status: int = 400) -> dict[str, Any]:
    """A result line in vLLM's error-line shape."""
    return {
        "id": f"failtax-{custom_id}",
        "custom_id": custom_id,
        "response": {"status_code": status, "request_id": f"failtax-{custom_id}", "body": None},
        "error": {"message": why},
    }


def answered_ids(paths: Iterable[str | os.PathLike]) -> set[str]:
    """custom_ids with a line (an answer or an error line) in any of the result files."""
    done: set[str] = set()
    for path in paths:
        if Path(path).is_file():
            done.update(str(o["custom_id"]) for _, o, _ in read_jsonl_lines(path) if o and o.get("custom_id"))
    return done


def result_parts(result_file: str | os.PathLike) -> list[Path]:
    """The result file and its resumed parts (`<name>.part-N.jsonl`), in order."""
    p = Path(result_file)
    parts = sorted(p.parent.glob(f"{p.stem}.part-*.jsonl"), key=lambda q: int(q.stem.rsplit("-", 1)[1]))
    return ([p] if p.is_file() else []) + parts


def run_batch_command(recipe: Recipe, python: str, model_dir: str | os.PathLike, inp: str, out: str) -> list[str]:
    """vLLM's batch runner with the recipe's flags (the same as `failtax serve`)."""
    return [python, "-m", "vllm.entrypoints.openai.run_batch", "-i", inp, "-o", out,
            *recipe.vllm_args(Path(model_dir))]


def run_batch_local(
    recipe: Recipe,
    requests_file: str | os.PathLike,
    results_file: str | os.PathLike,
    *,
    python: str | None = None,
    model_dir: str | os.PathLike | None = None,
    log_file: str | os.PathLike | None = None,
    timeout_s: float | None = None,
) -> dict[str, int]:
    """Answer one shard with vLLM's batch runner, resumably.

    Ids that already have a line (an answer or an error line) in `results_file` or its
    parts are skipped; lines that would stop vLLM's runner (not JSON, missing fields) are
    answered with error lines here. The rest go to one run of the runner, whose
    output (written by vLLM when the shard finishes) becomes the next part file, so a
    killed run loses only the shard's unfinished part.

    Returns counts: requests, skipped (already answered), bad_rows, sent.
    """
    from serving.launcher import resolve_server_python

    requests_file, results_file = Path(requests_file), Path(results_file)
    done = answered_ids(result_parts(results_file))
    todo: list[str] = []
    bad: list[dict[str, Any]] = []
    seen: set[str] = set()
    total = 0
    for n, obj, raw in read_jsonl_lines(requests_file):
        total += 1
        why = check_request_line(obj)
        cid = str(obj.get("custom_id")) if obj and obj.get("custom_id") else f"line-{n}"
        if cid in done:
            continue
        if why is not None:
            bad.append(error_line(cid, f"bad request row {n} of {requests_file.name}: {why}"))
            continue
        if cid in seen:
            continue
        seen.add(cid)
        todo.append(raw.rstrip("\n"))
    counts = {"requests": total, "skipped": total - len(todo) - len(bad), "bad_rows": len(bad), "sent": len(todo)}
    parts = result_parts(results_file)
    results_file.parent.mkdir(parents=True, exist_ok=True)
    if bad:  # answered here, once: a rerun finds their ids in this part and skips them
        bad_file = results_file.parent / f"{results_file.stem}.part-{len(parts)}.jsonl"
        bad_file.write_text("".join(json.dumps(b) + "\n" for b in bad))
        parts.append(bad_file)
    next_part = results_file.parent / f"{results_file.stem}.part-{len(parts)}.jsonl"
    if not todo:
        return counts
    python = resolve_server_python(python)
    folder = Path(model_dir) if model_dir else recipe.require_model_dir()
    pending = results_file.parent / f"{results_file.stem}.pending.jsonl"
    pending.write_text("\n".join(todo) + "\n")
    tmp_out = results_file.parent / f"{results_file.stem}.running.jsonl"
    cmd = run_batch_command(recipe, python, folder, str(pending), str(tmp_out))
    env = {**os.environ, **recipe.env, "PYTHONUNBUFFERED": "1"}
    for var in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME"):
        env.pop(var, None)
    log.info("run-batch: %d requests of %s (%s)", len(todo), requests_file.name, " ".join(cmd))
    if log_file:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
    out = open(log_file, "ab") if log_file else subprocess.DEVNULL  # noqa: SIM115
    try:
        # own process group: a timeout (or Ctrl-C) stops the engine workers too
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            proc.wait(timeout=timeout_s)
        except BaseException as e:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            if isinstance(e, subprocess.TimeoutExpired):
                raise BackendError(
                    f"vLLM's batch runner on {requests_file.name} was stopped after {timeout_s} s; "
                    "run the same command again to resume (answered ids are skipped)"
                ) from None
            raise
    finally:
        if log_file:
            out.close()
    if proc.returncode != 0 or not tmp_out.is_file():
        tail = ""
        if log_file and Path(log_file).is_file():
            lines = Path(log_file).read_text(errors="replace").splitlines()
            tail = "; last lines of its log:\n" + "\n".join(lines[-15:])
        raise BackendError(
            f"vLLM's batch runner exited with code {proc.returncode} on {requests_file.name}"
            + (f"; see {log_file}" if log_file else "") + tail
            + "; run the same command again to resume (answered ids are skipped)"
        )
    os.replace(tmp_out, next_part)
    pending.unlink(missing_ok=True)
    return counts


def main(argv: list[str] | None = None) -> int:
    """`python -m serving.batch RECIPE REQUESTS RESULTS`: one shard, resumably (what
    the SLURM script and `failtax batch run` call)."""
    import argparse

    from serving.recipes import resolve_recipe

    p = argparse.ArgumentParser(prog="python -m serving.batch", description=main.__doc__)
    p.add_argument("recipe", help="recipe name or weights folder")
    p.add_argument("requests")
    p.add_argument("results")
    p.add_argument("--server-python", default=None)
    p.add_argument("--device", choices=["gpu", "cpu"], default=None)
    p.add_argument("--tensor-parallel-size", type=int, default=None)
    p.add_argument("--log", default=None)
    p.add_argument("--model-dir", default=None, help="weights folder (default: the recipe's)")
    p.add_argument("--weights", default=None,
                   help="expected weights fingerprint (the batch's cache scope): refuse other weights")
    args = p.parse_args(argv)
    recipe = resolve_recipe(args.recipe, device=args.device)
    if args.tensor_parallel_size:
        recipe = recipe.model_copy(update={"tensor_parallel_size": args.tensor_parallel_size})
    model_dir = Path(args.model_dir) if args.model_dir else recipe.require_model_dir()
    if args.weights and weights_fingerprint(model_dir) != args.weights:
        raise SystemExit(
            f"{model_dir} holds other weights than the batch was exported for (fingerprint "
            f"{weights_fingerprint(model_dir)} != {args.weights}); their answers would be cached "
            "under the wrong model. Point --model-dir at the exported model's weights."
        )
    counts = run_batch_local(recipe, args.requests, args.results, python=args.server_python,
                             model_dir=model_dir, log_file=args.log)
    print(json.dumps(counts), file=sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
