"""Schema-guided JSON for in-process models, without a grammar engine.

The in-process backend has no xgrammar (its Linux wheel pulls in triton, which
the main environment does not carry), so it builds JSON answers field by
field instead: the structure (braces, keys, commas, quotes) is written by us,
and the model only chooses what the schema leaves open:

- enum / const / boolean: the candidate with the highest log-likelihood;
- string: free generation, stopped at a quote, a newline or `maxLength`;
- integer / number: a short generation, the leading number kept and clamped;
- array: items one by one, continuing while the model prefers "," over "]"
  (within minItems..maxItems);
- object: every property in schema order.

The result is valid JSON of the schema's shape by construction. Schemas using
features outside this subset (patterns, formats, oneOf between objects,
additionalProperties maps) are reported by `unsupported_features`, and the
caller falls back to asking for JSON in the prompt.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any, Protocol

_NUMBER = re.compile(r"^\s*(-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)")
_OPENERS = {
    "string": '"',
    "object": "{",
    "array": "[",
    "boolean": "t",
    "integer": "1",
    "number": "1",
    "null": "n",
}
_DEFAULT_STRING_CHARS = 200
_DEFAULT_MAX_ITEMS = 8


class GuidedLM(Protocol):
    """What the filler needs from a model; `prefix` is everything after the prompt."""

    def score(self, prefix: str, candidates: list[str]) -> list[float]:
        """Log-likelihood of each candidate continuing `prefix`."""
        ...

    def generate(self, prefix: str, max_new_tokens: int, stop: Callable[[str], bool]) -> str:
        """Greedy continuation of `prefix`, stopped once `stop(generated_text)` is true."""
        ...


def unsupported_features(
    schema: dict[str, Any], _defs: dict | None = None, _path: str = "$"
) -> list[str]:
    """Paths and features this filler cannot honour; empty when it can fill the schema."""
    defs = _defs if _defs is not None else (schema.get("$defs") or schema.get("definitions") or {})
    out: list[str] = []
    if "$ref" in schema:
        target = defs.get(schema["$ref"].rsplit("/", 1)[-1])
        return (
            [f"{_path}: unresolved $ref"]
            if target is None
            else unsupported_features(target, defs, _path)
        )
    for key in ("pattern", "format", "patternProperties", "not", "if", "oneOf", "allOf"):
        if key in schema:
            out.append(f"{_path}: {key}")
    if "anyOf" in schema:
        non_null = [s for s in schema["anyOf"] if s.get("type") != "null"]
        if len(non_null) != 1:
            out.append(f"{_path}: anyOf with {len(non_null)} non-null options")
        for s in non_null:
            out += unsupported_features(s, defs, _path)
        return out
    if "enum" in schema or "const" in schema:
        return out
    kind = _main_type(schema)
    if kind not in _OPENERS:
        out.append(f"{_path}: type {kind!r}")
    if kind == "object":
        if isinstance(schema.get("additionalProperties"), dict) and not schema.get("properties"):
            out.append(f"{_path}: free-form map (additionalProperties)")
        for name, sub in (schema.get("properties") or {}).items():
            out += unsupported_features(sub, defs, f"{_path}.{name}")
    if kind == "array":
        out += unsupported_features(schema.get("items") or {}, defs, f"{_path}[*]")
    return out


def fill_schema(lm: GuidedLM, schema: dict[str, Any]) -> str:
    """Compact JSON text of `schema`'s shape, with the open parts chosen by `lm`."""
    defs = schema.get("$defs") or schema.get("definitions") or {}
    out: list[str] = []

    def text() -> str:
        return "".join(out)

    def choose(candidates: list[str]) -> str:
        if len(candidates) == 1:
            return candidates[0]
        scores = lm.score(text(), candidates)
        return candidates[max(range(len(candidates)), key=lambda i: scores[i])]

    def value(node: dict[str, Any]) -> None:
        if "$ref" in node:
            return value(defs[node["$ref"].rsplit("/", 1)[-1]])
        if "anyOf" in node:
            return value(next(s for s in node["anyOf"] if s.get("type") != "null"))
        if "const" in node:
            out.append(json.dumps(node["const"], ensure_ascii=False))
            return None
        if "enum" in node:
            out.append(choose([json.dumps(v, ensure_ascii=False) for v in node["enum"]]))
            return None
        kind = _main_type(node)
        if kind == "object":
            out.append("{")
            for i, (name, sub) in enumerate((node.get("properties") or {}).items()):
                out.append(("," if i else "") + json.dumps(name) + ":")
                value(sub)
            out.append("}")
        elif kind == "array":
            item = node.get("items") or {"type": "string"}
            lo = int(node.get("minItems", 0))
            hi = int(node.get("maxItems", max(lo, _DEFAULT_MAX_ITEMS)))
            out.append("[")
            n = 0
            while n < hi:
                if n >= lo:
                    opener = (
                        _OPENERS.get(_main_type(item), '"')
                        if "enum" not in item
                        else json.dumps(item["enum"][0])[0]
                    )
                    if choose(["]", opener if n == 0 else ","]) == "]":
                        break
                if n:
                    out.append(",")
                value(item)
                n += 1
            out.append("]")
        elif kind == "string":
            limit = int(node.get("maxLength", _DEFAULT_STRING_CHARS))
            out.append('"')
            raw = lm.generate(
                text(),
                max_new_tokens=limit,
                stop=lambda s: '"' in s or "\n" in s or len(s) >= limit,
            )
            raw = re.split(r'["\n]', raw, maxsplit=1)[0][:limit].rstrip("\\")
            out.append(json.dumps(raw, ensure_ascii=False)[1:])  # opening quote already written
        elif kind in ("integer", "number"):
            raw = lm.generate(
                text(), max_new_tokens=8, stop=lambda s: bool(re.search(r"[^\d.\-eE+\s]", s))
            )
            out.append(_number(raw, node, integer=kind == "integer"))
        elif kind == "boolean":
            out.append(choose(["true", "false"]))
        else:
            out.append("null")
        return None

    value(schema)
    return text()


def _main_type(node: dict[str, Any]) -> str:
    kind = node.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in node else "string"
    return kind


def _number(raw: str, node: dict[str, Any], *, integer: bool) -> str:
    m = _NUMBER.match(raw)
    x = float(m.group(1)) if m else float(node.get("minimum", 0))
    if "minimum" in node:
        x = max(x, float(node["minimum"]))
    if "maximum" in node:
        x = min(x, float(node["maximum"]))
    if integer:
        return str(round(x))
    return json.dumps(x)
