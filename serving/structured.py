"""Structured outputs: schema hygiene, parsing model text, validating it.

Measured on vLLM with xgrammar: a JSON schema whose strings have no
`maxLength` lets a small model run on inside a string until `max_tokens`
(finish_reason=length, 11/20 parsed); with every string capped and
`max_tokens` covering the schema, 20/20 parsed. So every schema sent to a
model goes through `cap_schema` and `schema_token_budget`.
"""

from __future__ import annotations

import copy
import json
import math
import re
from typing import Any

_THINK = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)
_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)```", re.DOTALL)


def uncapped_paths(schema: dict[str, Any], path: str = "$") -> list[str]:
    """JSON paths of strings without `maxLength` and arrays without `maxItems`
    (neither counts when it is an `enum`/`const`, which bounds itself)."""
    out: list[str] = []
    if not isinstance(schema, dict):
        return out
    kind = schema.get("type")
    kinds = kind if isinstance(kind, list) else [kind]
    bounded = "enum" in schema or "const" in schema
    if "string" in kinds and not bounded and "maxLength" not in schema:
        out.append(path)
    if "array" in kinds and not bounded and "maxItems" not in schema:
        out.append(path + "[]")
    for key, sub in (schema.get("properties") or {}).items():
        out += uncapped_paths(sub, f"{path}.{key}")
    if isinstance(schema.get("items"), dict):
        out += uncapped_paths(schema["items"], f"{path}[*]")
    for key in ("anyOf", "oneOf", "allOf"):
        for i, sub in enumerate(schema.get(key) or []):
            out += uncapped_paths(sub, f"{path}.{key}[{i}]")
    for name, sub in (schema.get("$defs") or schema.get("definitions") or {}).items():
        out += uncapped_paths(sub, f"$defs.{name}")
    return out


def cap_schema(schema: dict[str, Any], *, max_string_length: int, max_items: int) -> dict[str, Any]:
    """A copy of `schema` where every uncapped string gets `maxLength` and every
    uncapped array `maxItems` (existing caps are kept)."""
    schema = copy.deepcopy(schema)

    def visit(node: Any) -> None:
        if not isinstance(node, dict):
            return
        kind = node.get("type")
        kinds = kind if isinstance(kind, list) else [kind]
        if "enum" not in node and "const" not in node:
            if "string" in kinds:
                node.setdefault("maxLength", max_string_length)
            if "array" in kinds:
                node.setdefault("maxItems", max_items)
        for sub in (node.get("properties") or {}).values():
            visit(sub)
        visit(node.get("items"))
        for key in ("anyOf", "oneOf", "allOf"):
            for sub in node.get(key) or []:
                visit(sub)
        for sub in (node.get("$defs") or node.get("definitions") or {}).values():
            visit(sub)

    visit(schema)
    return schema


def schema_token_budget(schema: dict[str, Any], _defs: dict | None = None) -> int:
    """An upper estimate of the tokens a compact JSON answer to `schema` can take
    (one token per character of strings, plus punctuation and keys). Use it as
    the floor of `max_tokens`. Uncapped strings/arrays count as 256 chars / 8 items."""
    if not isinstance(schema, dict):
        return 8
    defs = _defs if _defs is not None else (schema.get("$defs") or schema.get("definitions") or {})
    if "$ref" in schema:
        return schema_token_budget(defs.get(schema["$ref"].rsplit("/", 1)[-1], {}), defs)
    if "enum" in schema:
        return 2 + max((len(json.dumps(v)) for v in schema["enum"]), default=1)
    if "const" in schema:
        return 2 + len(json.dumps(schema["const"]))
    for key in ("anyOf", "oneOf"):
        if schema.get(key):
            return max(schema_token_budget(s, defs) for s in schema[key])
    kind = schema.get("type")
    kind = kind[0] if isinstance(kind, list) else kind
    if kind == "object" or "properties" in schema:
        props = schema.get("properties") or {}
        return 2 + sum(len(k) + 4 + schema_token_budget(v, defs) for k, v in props.items())
    if kind == "array":
        n = schema.get("maxItems", 8)
        return 2 + n * (1 + schema_token_budget(schema.get("items", {}), defs))
    if kind == "string":
        return 2 + int(schema.get("maxLength", 256))
    if kind in ("integer", "number"):
        return 12
    if kind == "boolean":
        return 2
    return 16


def strip_to_json(text: str) -> str:
    """The JSON part of a model's text: drops <think> blocks (and an unclosed one),
    code fences, and prose around the first balanced {...} or [...]."""
    text = _THINK.sub("", text)
    if "</think>" in text.lower():  # a closing tag without its opener (template ate it)
        text = text[text.lower().rfind("</think>") + len("</think>") :]
    fenced = _FENCE.search(text)
    if fenced:
        text = fenced.group(1)
    text = text.strip()
    start = min((i for i in (text.find("{"), text.find("[")) if i >= 0), default=-1)
    if start < 0:
        return text
    opener = text[start]
    closer = "}" if opener == "{" else "]"
    depth, in_string, escaped = 0, False, False
    for i in range(start, len(text)):
        ch = text[i]
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch == opener:
            depth += 1
        elif ch == closer:
            depth -= 1
            if depth == 0:
                return text[start : i + 1]
    return text[start:]


def parse_json_answer(text: str, schema: dict[str, Any]) -> tuple[Any, str | None]:
    """(object, None) when `text` holds JSON valid against `schema`, else (None, why)."""
    import jsonschema

    candidate = strip_to_json(text)
    if not candidate:
        return None, "the answer was empty"
    try:
        obj = json.loads(candidate)
    except json.JSONDecodeError as e:
        return None, f"not valid JSON ({e.msg} at character {e.pos})"
    try:
        jsonschema.validate(obj, schema, cls=jsonschema.Draft202012Validator)
    except jsonschema.ValidationError as e:
        where = "/".join(map(str, e.absolute_path)) or "top level"
        return None, f"JSON does not match the schema at {where}: {e.message[:300]}"
    except jsonschema.SchemaError as e:
        raise ValueError(f"invalid JSON schema: {e.message}") from None
    return obj, None


def match_choice(text: str, choices: list[str]) -> str | None:
    """The choice `text` names: exact match after stripping think blocks, quotes,
    punctuation and case; else the single choice contained in it; else None."""
    clean = _THINK.sub("", text).strip().strip("`\"'.:;!* \n").strip()
    for c in choices:
        if clean == c:
            return c
    lowered = {c.lower(): c for c in choices}
    if clean.lower() in lowered:
        return lowered[clean.lower()]
    # longest first, so "collision-glass" wins over "collision" when both fit
    found = [
        c
        for c in sorted(choices, key=len, reverse=True)
        if re.search(rf"(?<!\w){re.escape(c.lower())}(?!\w)", clean.lower())
    ]
    if len(found) == 1 or (found and all(f in found[0] for f in found[1:])):
        return found[0]
    return None


# token alternatives asked for with a choice answer's first token (how sure the model was)
CHOICE_TOP_LOGPROBS = 20


def first_token_alternatives(choice: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The `top_logprobs` of the first answer token of one OpenAI chat `choices[i]`
    entry ([{"token", "logprob"}, ...]), or None when the server sent none."""
    try:
        top = choice["logprobs"]["content"][0]["top_logprobs"]
    except (KeyError, IndexError, TypeError):
        return None
    return top if isinstance(top, list) and top else None


def choice_probabilities(alternatives: list[dict[str, Any]] | None, choices: list[str]
                         ) -> dict[str, float] | None:
    """How probable each choice was as the answer, from the first answer token's
    alternatives: a token counts for the one choice it begins; the shares are
    renormalised over the choices (a constrained server lists only tokens that begin a
    choice anyway). A token that begins several choices ("t" for "thin" and
    "transparent") cannot tell them apart and is left out. None when there are no
    alternatives, when no token begins exactly one choice, or when the tokens left out
    weigh more than the ones counted.

    Example:
        >>> choice_probabilities([{"token": "UN", "logprob": -0.2}, {"token": "SAFE", "logprob": -1.7}],
        ...                      ["SAFE", "UNSAFE"])
        {'SAFE': 0.1824, 'UNSAFE': 0.8176}
    """
    if not alternatives:
        return None
    mass = dict.fromkeys(choices, 0.0)
    shared = 0.0
    for alt in alternatives:
        token = str(alt.get("token") or "").lstrip()
        logprob = alt.get("logprob")
        if not token or not isinstance(logprob, (int, float)) or math.isinf(logprob):
            continue
        begins = [c for c in choices if c.startswith(token)]
        if len(begins) > 1:
            shared += math.exp(logprob)
        elif begins:
            mass[begins[0]] += math.exp(logprob)
    total = sum(mass.values())
    if total <= 0 or shared > total:
        return None
    return {c: round(m / total, 4) for c, m in mass.items()}


def json_prompt_instruction(schema: dict[str, Any]) -> str:
    """The text appended to the last user message when the backend cannot
    constrain output: asks for bare JSON matching the schema."""
    return (
        "\n\nAnswer with one JSON object only, no prose and no code fences, "
        "matching this JSON schema:\n" + json.dumps(schema, separators=(",", ":"))
    )


def choice_prompt_instruction(choices: list[str]) -> str:
    return "\n\nAnswer with exactly one of these options and nothing else: " + " | ".join(choices)


def reask_message(error: str, schema: dict[str, Any] | None = None) -> dict[str, str]:
    """The user turn sent once after an unparseable answer."""
    hint = (
        "Reply again with only the corrected JSON object."
        if schema is not None
        else ("Reply again with only one of the allowed options.")
    )
    return {"role": "user", "content": f"Your answer could not be used: {error}. {hint}"}


def append_to_last_user(messages: list[dict], suffix: str) -> list[dict]:
    """Copy of `messages` with `suffix` appended to the last user message's text."""
    out = [dict(m) for m in messages]
    for m in reversed(out):
        if m.get("role") != "user":
            continue
        if isinstance(m.get("content"), str):
            m["content"] = m["content"] + suffix
        else:
            m["content"] = list(m["content"]) + [{"type": "text", "text": suffix}]
        return out
    return out + [{"role": "user", "content": suffix.strip()}]
