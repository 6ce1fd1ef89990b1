"""Schema hygiene, JSON extraction, validation and choice matching."""

from __future__ import annotations

import json
import math

from serving.structured import (
    cap_schema,
    match_choice,
    parse_json_answer,
    schema_token_budget,
    strip_to_json,
    uncapped_paths,
)

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "mode": {"type": "string", "enum": ["a", "b"]},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 10}},
        "sub": {"type": "object", "properties": {"note": {"type": ["string", "null"]}}},
    },
    "required": ["name", "mode"],
}


def test_uncapped_paths_finds_runaway_strings_and_arrays():
    assert uncapped_paths(SCHEMA) == ["$.name", "$.tags[]", "$.sub.note"]


def test_cap_schema_caps_only_what_is_uncapped_and_copies():
    capped = cap_schema(SCHEMA, max_string_length=50, max_items=4)
    assert uncapped_paths(capped) == []
    assert capped["properties"]["name"]["maxLength"] == 50
    assert capped["properties"]["tags"]["items"]["maxLength"] == 10  # kept
    assert "maxLength" not in capped["properties"]["mode"]  # enum bounds itself
    assert "maxLength" not in SCHEMA["properties"]["name"]  # input untouched


def test_token_budget_grows_with_caps():
    small = schema_token_budget(cap_schema(SCHEMA, max_string_length=10, max_items=2))
    large = schema_token_budget(cap_schema(SCHEMA, max_string_length=100, max_items=8))
    assert 20 < small < large
    assert schema_token_budget({"type": "string", "maxLength": 30}) == 32


def test_strip_to_json_handles_think_fences_and_prose():
    assert strip_to_json('<think>{"no": 1}</think>\n```json\n{"a": "}"}\n```') == '{"a": "}"}'
    assert (
        strip_to_json('Here you go: {"a": [1, {"b": 2}]} hope it helps') == '{"a": [1, {"b": 2}]}'
    )
    assert strip_to_json('reasoning...</think>{"a": 1}') == '{"a": 1}'
    assert strip_to_json("[1, 2] trailing") == "[1, 2]"


def test_parse_json_answer_validates():
    ok, err = parse_json_answer('{"name": "x", "mode": "a"}', SCHEMA)
    assert ok == {"name": "x", "mode": "a"} and err is None
    bad, err = parse_json_answer('{"name": "x", "mode": "c"}', SCHEMA)
    assert bad is None and "mode" in err
    bad, err = parse_json_answer('{"name": "x", "mode": ', SCHEMA)
    assert bad is None and "not valid JSON" in err
    bad, err = parse_json_answer("", SCHEMA)
    assert bad is None and "empty" in err


def test_match_choice():
    choices = ["collision", "collision-glass", "timeout"]
    assert match_choice("collision-glass", choices) == "collision-glass"
    assert match_choice(" Timeout.\n", choices) == "timeout"
    assert match_choice("<think>maybe timeout</think>collision", choices) == "collision"
    assert match_choice("It was a collision-glass event", choices) == "collision-glass"
    assert match_choice("timeout or collision", choices) is None
    assert match_choice("no idea", choices) is None
    json.dumps(choices)


def test_choice_probabilities_from_the_first_token():
    from serving.structured import choice_probabilities

    top = [{"token": "UN", "logprob": math.log(0.6)}, {"token": " SAFE", "logprob": math.log(0.3)},
           {"token": "S", "logprob": math.log(0.1)}, {"token": "The", "logprob": math.log(0.5)},
           {"token": "x", "logprob": float("-inf")}]
    # "S" and " SAFE" both begin SAFE; "The" begins neither and is left out
    assert choice_probabilities(top, ["SAFE", "UNSAFE"]) == {"SAFE": 0.4, "UNSAFE": 0.6}
    # a token that begins two choices cannot tell them apart: left out, unless it outweighs
    pick = [{"token": "glass", "logprob": math.log(0.6)}, {"token": "glo", "logprob": math.log(0.3)},
            {"token": "gl", "logprob": math.log(0.1)}]
    assert choice_probabilities(pick, ["glass", "glove"]) == {"glass": 0.6667, "glove": 0.3333}
    assert choice_probabilities([{"token": "gl", "logprob": -0.1}], ["glass", "glove"]) is None
    assert choice_probabilities([{"token": "The", "logprob": -0.1}], ["SAFE", "UNSAFE"]) is None
    assert choice_probabilities(None, ["SAFE", "UNSAFE"]) is None
