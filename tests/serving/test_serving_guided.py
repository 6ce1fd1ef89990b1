"""Schema-guided JSON building (the in-process backend's constraint) with a
scripted stand-in model: structure, caps, numbers, arrays, unsupported features."""

from __future__ import annotations

import json

import jsonschema

from serving.guided import fill_schema, unsupported_features


class ScriptedLM:
    """Prefers candidates listed in `likes`; generates from `texts` in turn."""

    def __init__(self, likes=(), texts=()):
        self.likes = list(likes)
        self.texts = list(texts)
        self.prefixes = []

    def score(self, prefix, candidates):
        self.prefixes.append(prefix)
        return [1.0 if c in self.likes else 0.0 for c in candidates]

    def generate(self, prefix, max_new_tokens, stop):
        self.prefixes.append(prefix)
        text = self.texts.pop(0) if self.texts else ""
        out = ""
        for ch in text:  # like a model emitting one character per token
            out += ch
            if stop(out) or len(out) >= max_new_tokens:
                break
        return out


SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 10},
        "mode": {"enum": ["glass", "pole"]},
        "n": {"type": "integer", "minimum": 1, "maximum": 5},
        "x": {"type": "number"},
        "ok": {"type": "boolean"},
        "tags": {
            "type": "array",
            "items": {"type": "string", "maxLength": 5},
            "minItems": 1,
            "maxItems": 3,
        },
        "inner": {"$ref": "#/$defs/Inner"},
        "maybe": {"anyOf": [{"type": "string", "maxLength": 4}, {"type": "null"}]},
    },
    "$defs": {"Inner": {"type": "object", "properties": {"k": {"const": 1}}}},
}


def test_fills_a_valid_object_of_the_schema_shape():
    lm = ScriptedLM(
        likes=['"pole"', "false", ","],
        texts=['robot "said" hi', "42 apples", "-0.5x", 'a"', "bbbbbbbb", "cc", "zz"],
    )
    text = fill_schema(lm, SCHEMA)
    obj = json.loads(text)
    jsonschema.validate(obj, SCHEMA)
    assert obj["name"] == "robot " and obj["mode"] == "pole" and obj["n"] == 5 and obj["x"] == -0.5
    assert obj["ok"] is False and obj["inner"] == {"k": 1}
    assert obj["tags"] == ["a", "bbbbb", "cc"]  # capped at maxLength and maxItems
    assert obj["maybe"] == "zz"
    # the model always sees the JSON built so far
    assert any(p.startswith('{"name":"robot ","mode":"pole"') for p in lm.prefixes)


def test_strings_are_escaped_and_arrays_can_be_empty():
    schema = {
        "type": "object",
        "properties": {
            "s": {"type": "string", "maxLength": 20},
            "a": {"type": "array", "items": {"type": "integer"}},
        },
    }
    obj = json.loads(fill_schema(ScriptedLM(likes=["]"], texts=["back\\slash\ttab"]), schema))
    assert obj == {"s": "back\\slash\ttab", "a": []}


def test_unsupported_features_are_reported():
    assert unsupported_features(SCHEMA) == []
    assert unsupported_features({"type": "string", "pattern": "^a"}) == ["$: pattern"]
    assert unsupported_features({"type": "object", "additionalProperties": {"type": "string"}})
    assert unsupported_features({"anyOf": [{"type": "string"}, {"type": "integer"}]})
