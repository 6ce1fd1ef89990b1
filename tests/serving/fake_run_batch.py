"""A stand-in for vLLM's batch runner in fast tests: `-i IN -o OUT [vLLM flags]`.

Answers every request line from its own body (serving_stub_server.auto_answer), written
all at once at the end as vLLM does. Like vLLM, one line that is not a valid request
stops the whole file (exit 1). FAKE_RUN_BATCH_DIE=1 exits before writing (a killed
task); FAKE_RUN_BATCH_CALLS names a file that gets one line per run. The real
runner is exercised in tests marked `server`.
"""

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serving_stub_server import auto_answer

args = sys.argv[1:]
inp, out = args[args.index("-i") + 1], args[args.index("-o") + 1]
if os.environ.get("FAKE_RUN_BATCH_CALLS"):
    with open(os.environ["FAKE_RUN_BATCH_CALLS"], "a") as f:
        f.write(" ".join(args) + "\n")
if os.environ.get("FAKE_RUN_BATCH_DIE"):
    sys.exit(137)
lines = []
for raw in Path(inp).read_text().splitlines():
    if not raw.strip():
        continue
    request = json.loads(raw)  # a bad line stops the file, as in vLLM
    body = request["body"]
    lines.append(json.dumps({
        "id": "fake", "custom_id": request["custom_id"], "error": None,
        "response": {"status_code": 200, "request_id": "fake", "body": {
            "choices": [{"index": 0, "message": {"role": "assistant", "content": auto_answer(body)},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5}}},
    }))
Path(out).write_text("\n".join(lines) + "\n")
