"""A scripted OpenAI-compatible HTTP server on 127.0.0.1 for client unit tests.

Each request to /v1/chat/completions takes the next scripted action:
("reply", text) / ("reply", text, finish_reason[, first token's top_logprobs]),
("status", code, body[, headers]),
("sleep", seconds) (answers too late), ("drop",) (closes the connection),
("auto",) (a valid answer built from the request's own constraint: one of the
`choice` list, or an instance of the `json` schema, its words picked by a hash of
the messages, so the same request always gets the same answer).
When the script runs out, the last action repeats. Requests are recorded when they
arrive (`requests`) and, once the answer is written, in `completed`.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class StubServer:
    def __init__(
        self,
        script: list[tuple],
        *,
        version: str | None = None,
        owned_by: str = "stub",
        root: str | None = None,
    ) -> None:
        self.script = list(script)
        self.requests: list[dict] = []
        self.completed: list[dict] = []  # request bodies whose answer was sent in full
        self.times: list[float] = []
        self.version = version
        self.owned_by = owned_by
        self.root = root  # the weights /v1/models reports, as vLLM does; None: no root field
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def _send(self, code: int, body: dict | str, headers: dict | None = None) -> None:
                data = (json.dumps(body) if isinstance(body, dict) else body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                try:
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout tests)

            def do_GET(self):
                if self.path == "/version" and stub.version:
                    self._send(200, {"version": stub.version})
                elif self.path == "/v1/models":
                    entry = {"id": "stub-model", "owned_by": stub.owned_by}
                    if stub.root is not None:
                        entry["root"] = stub.root
                    self._send(200, {"data": [entry]})
                else:
                    self._send(404, {"error": "not found"})

            def do_POST(self):
                try:
                    body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                except ValueError:  # the client died mid-request
                    return
                stub.requests.append({"body": body, "headers": dict(self.headers)})
                stub.times.append(time.monotonic())
                action = stub.script.pop(0) if len(stub.script) > 1 else stub.script[0]
                kind = action[0]
                if kind == "auto":
                    text = auto_answer(body)
                    alts = auto_alternatives(body, text)
                    action = ("reply", text, "stop", alts) if alts else ("reply", text)
                    kind = "reply"
                if kind == "reply":
                    finish = action[2] if len(action) > 2 else "stop"
                    choice = {
                        "message": {"role": "assistant", "content": action[1]},
                        "finish_reason": finish,
                    }
                    if len(action) > 3:
                        choice["logprobs"] = logprobs_block(action[3])
                    self._send(
                        200,
                        {
                            "choices": [choice],
                            "usage": {"prompt_tokens": 10, "completion_tokens": 5},
                        },
                    )
                    stub.completed.append(body)
                elif kind == "status":
                    self._send(action[1], action[2], action[3] if len(action) > 3 else None)
                elif kind == "sleep":
                    time.sleep(action[1])
                    self._send(
                        200,
                        {"choices": [{"message": {"content": "late"}, "finish_reason": "stop"}]},
                    )
                elif kind == "drop":
                    self.close_connection = True
                    self.connection.shutdown(2)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self) -> StubServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


WORDS = ["glass", "pole", "box", "chair", "wall", "door", "corner", "table", "dark", "narrow"]


def auto_answer(body: dict) -> str:
    """A valid answer to a chat request from its `structured_outputs` constraint."""
    seed = hashlib.sha256(json.dumps(body["messages"], sort_keys=True).encode()).digest()
    constraint = body.get("structured_outputs") or {}
    if "choice" in constraint:
        return constraint["choice"][seed[0] % len(constraint["choice"])]
    if "json" in constraint:
        return json.dumps(_instance(constraint["json"], constraint["json"], seed, [0]))
    return " ".join(WORDS[b % len(WORDS)] for b in seed[:6])


def auto_alternatives(body: dict, answer: str) -> list[dict] | None:
    """The first token's top_logprobs a vLLM server would send with `answer` to a choice
    request that asks for them: each choice's first 2 characters as its token, the
    answer's the most probable, the others' probabilities from the messages' hash."""
    choices = (body.get("structured_outputs") or {}).get("choice")
    if not choices or not body.get("logprobs"):
        return None
    seed = hashlib.sha256(json.dumps(body["messages"], sort_keys=True).encode()).digest()
    alts = [{"token": c[:2], "logprob": -0.05 if c == answer else -1.0 - seed[i] / 64}
            for i, c in enumerate(choices)]
    return sorted(alts, key=lambda a: -a["logprob"])


def logprobs_block(alternatives: list[dict]) -> dict:
    """A chat choice's `logprobs` whose first token is the first of `alternatives`."""
    return {"content": [{**alternatives[0], "top_logprobs": alternatives}]}


def _instance(schema: dict, root: dict, seed: bytes, counter: list[int]):
    """Smallest valid instance of a (pydantic-made) JSON schema, words from `seed`."""
    if "$ref" in schema:
        node = root
        for part in schema["$ref"].lstrip("#/").split("/"):
            node = node[part]
        return _instance(node, root, seed, counter)
    for key in ("anyOf", "oneOf", "allOf"):
        if key in schema:
            options = [o for o in schema[key] if o.get("type") != "null"] or schema[key]
            return _instance(options[0], root, seed, counter)
    if "enum" in schema:
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    kind = schema.get("type", "object")
    if isinstance(kind, list):
        kind = next(k for k in kind if k != "null")
    counter[0] += 1
    pick = seed[counter[0] % len(seed)]
    if kind == "object":
        props = schema.get("properties", {})
        return {k: _instance(v, root, seed, counter) for k, v in props.items()}
    if kind == "array":
        n = max(schema.get("minItems", 1), 1)
        n = min(n + pick % 2, schema.get("maxItems", n + 1))
        return [_instance(schema.get("items", {}), root, seed, counter) for _ in range(n)]
    if kind == "string":
        text = f"{WORDS[pick % len(WORDS)]} {WORDS[(pick // 10) % len(WORDS)]}"
        text = text.ljust(schema.get("minLength", 0), "x")
        return text[: schema.get("maxLength", len(text))]
    if kind == "integer":
        return max(schema.get("minimum", 0), 1)
    if kind == "number":
        return float(max(schema.get("minimum", 0.0), 0.5))
    if kind == "boolean":
        return bool(pick % 2)
    return None
