"""A scripted OpenAI-compatible HTTP server on 127.0.0.1 for client unit tests.

Each request to /v1/chat/completions takes the next scripted action:
("reply", text) / ("reply", text, finish_reason), ("status", code, body[, headers]),
("sleep", seconds) (answers too late), ("drop",) (closes the connection).
When the script runs out, the last action repeats. Requests are recorded.
"""

from __future__ import annotations

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
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                stub.requests.append({"body": body, "headers": dict(self.headers)})
                stub.times.append(time.monotonic())
                action = stub.script.pop(0) if len(stub.script) > 1 else stub.script[0]
                kind = action[0]
                if kind == "reply":
                    finish = action[2] if len(action) > 2 else "stop"
                    self._send(
                        200,
                        {
                            "choices": [
                                {
                                    "message": {"role": "assistant", "content": action[1]},
                                    "finish_reason": finish,
                                }
                            ],
                            "usage": {"prompt_tokens": 10, "completion_tokens": 5},
                        },
                    )
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
