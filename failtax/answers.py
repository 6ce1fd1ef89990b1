"""The answers models give, as typed pydantic models; the JSON schemas sent as
structured outputs are generated from them, and answers are validated with them.

Every string has a `max_length` and every list a `max_length` (a `maxLength` /
`maxItems` in the schema): small models otherwise run on inside a string until
the token limit. The caps come from the stage configs, so each model class is
built per parameter set (and cached). Field order is the order in the schema,
and models write JSON in schema order: `reasoning` comes first so the chain of
thought is generated before the answer.

`answer_schema(model)` is the schema sent to a server: `$ref`/`$defs` inlined
and `title`s dropped, the plain shape grammar backends (xgrammar in vLLM) take.

Example:
    >>> Answer = rephrase_answer(max_chars=40)
    >>> answer_schema(Answer)["properties"]["instructions"]
    {'type': 'string', 'minLength': 1, 'maxLength': 40}
    >>> Answer.model_validate({"instructions": "Name the failures."}).instructions
    'Name the failures.'
"""

from __future__ import annotations

import copy
from functools import cache, lru_cache
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, create_model

# Model answers are closed objects: `additionalProperties: false` in the schema.
_CLOSED = ConfigDict(extra="forbid")
# Schema keywords in the order the schemas are written (unknown keys keep their order, after these).
_KEY_ORDER = (
    "type", "enum", "const", "items", "properties", "required",
    "minLength", "maxLength", "minItems", "maxItems", "minimum", "maximum", "additionalProperties",
)


def _text(max_chars: int, *, min_chars: int = 1) -> Any:
    """A string type of `min_chars`..`max_chars` characters."""
    if min_chars:
        return Annotated[str, Field(min_length=min_chars, max_length=max_chars)]
    return Annotated[str, Field(max_length=max_chars)]


@cache
def explanation_answer(
    *,
    include_reasoning: bool,
    reasoning_max_chars: int,
    trajectory_max_chars: int,
    failure_reason_max_chars: int,
) -> type[BaseModel]:
    """The reason stage's answer: {reasoning?, trajectory, failure_reason}."""
    fields: dict[str, Any] = {}
    if include_reasoning:
        # First, so the chain of thought is generated before the answer; may be empty.
        fields["reasoning"] = (_text(reasoning_max_chars, min_chars=0), ...)
    fields["trajectory"] = (_text(trajectory_max_chars), ...)
    fields["failure_reason"] = (_text(failure_reason_max_chars), ...)
    return create_model("ExplanationAnswer", __config__=_CLOSED, **fields)


@cache
def report_answer(*, object_max_chars: int) -> type[BaseModel]:
    """What a model reads out of a human-written failure report: {object}."""
    return create_model("ReportAnswer", __config__=_CLOSED, object=(_text(object_max_chars), ...))


@cache
def mode_answer(
    *,
    name_max_chars: int,
    description_max_chars: int,
    keyword_max_chars: int,
    max_keywords: int,
    with_percent: bool,
) -> type[BaseModel]:
    """One failure mode: {name, description, keywords, percent?}."""
    fields: dict[str, Any] = {
        "name": (_text(name_max_chars), ...),
        "description": (_text(description_max_chars), ...),
        "keywords": (list[_text(keyword_max_chars)], Field(min_length=1, max_length=max_keywords)),
    }
    if with_percent:
        # The share of explanations the model says the mode covers, in percent.
        fields["percent"] = (Annotated[int, Field(ge=0, le=100)], ...)
    return create_model("ModeAnswer", __config__=_CLOSED, **fields)


@cache
def taxonomy_answer(
    *,
    name_max_chars: int,
    description_max_chars: int,
    keyword_max_chars: int,
    max_keywords: int,
    max_modes: int,
) -> type[BaseModel]:
    """A whole taxonomy: {"modes": [mode with percent, ...]}."""
    mode = mode_answer(
        name_max_chars=name_max_chars,
        description_max_chars=description_max_chars,
        keyword_max_chars=keyword_max_chars,
        max_keywords=max_keywords,
        with_percent=True,
    )
    return create_model(
        "TaxonomyAnswer", __config__=_CLOSED, modes=(list[mode], Field(min_length=1, max_length=max_modes))
    )


def _mode_caps(cfg: Any) -> dict[str, int]:
    """The length caps of a mode answer, from a discovery config."""
    return {
        "name_max_chars": cfg.name_max_chars,
        "description_max_chars": cfg.description_max_chars,
        "keyword_max_chars": cfg.keyword_max_chars,
        "max_keywords": cfg.max_keywords,
    }


def mode_answer_for(cfg: Any, *, with_percent: bool) -> type[BaseModel]:
    """`mode_answer` with the caps of a discovery config (`name_max_chars`, ...)."""
    return mode_answer(
        **_mode_caps(cfg),
        with_percent=with_percent,
    )


def taxonomy_answer_for(cfg: Any, max_modes: int) -> type[BaseModel]:
    """`taxonomy_answer` with the caps of a discovery config and at most `max_modes` modes."""
    return taxonomy_answer(
        **_mode_caps(cfg),
        max_modes=max_modes,
    )


@cache
def grouping_answer(
    *,
    name_max_chars: int,
    description_max_chars: int,
    keyword_max_chars: int,
    max_keywords: int,
    max_modes: int,
    groups: int,
) -> type[BaseModel]:
    """A taxonomy over numbered groups of explanations:
    {"modes": [{name, description, keywords, groups: [1..groups, ...]}, ...]}."""
    group = Annotated[int, Field(ge=1, le=groups)]
    mode = create_model(
        "GroupedModeAnswer",
        __base__=mode_answer(
            name_max_chars=name_max_chars,
            description_max_chars=description_max_chars,
            keyword_max_chars=keyword_max_chars,
            max_keywords=max_keywords,
            with_percent=False,
        ),
        groups=(list[group], Field(min_length=1, max_length=groups)),
    )
    return create_model(
        "GroupingAnswer", __config__=_CLOSED, modes=(list[mode], Field(min_length=1, max_length=max_modes))
    )


def grouping_answer_for(cfg: Any, groups: int) -> type[BaseModel]:
    """`grouping_answer` with the caps of a discovery config."""
    return grouping_answer(
        **_mode_caps(cfg),
        max_modes=min(cfg.max_modes, groups),
        groups=groups,
    )


@cache
def rephrase_answer(*, max_chars: int) -> type[BaseModel]:
    """A rephrased prompt: {"instructions": ...}."""
    return create_model("RephraseAnswer", __config__=_CLOSED, instructions=(_text(max_chars), ...))


@lru_cache(maxsize=1024)  # choices differ per explanation; keep the recent ones
def mode_choice_answer(choices: tuple[str, ...], *, max_modes: int) -> type[BaseModel]:
    """Several modes picked from `choices`: {"modes": [choice, ...]}."""
    # Pinned to `enum`: pydantic writes a one-value Literal as `const`.
    choice = Annotated[Literal[choices], WithJsonSchema({"type": "string", "enum": list(choices)})]
    return create_model(
        "ModeChoiceAnswer", __config__=_CLOSED, modes=(list[choice], Field(min_length=1, max_length=max_modes))
    )


@lru_cache(maxsize=64)
def monitor_answer(modes: tuple[str, ...] | None, *, reason_max_chars: int,
                   reason_first: bool = False) -> type[BaseModel]:
    """A runtime monitor's decision: {reason?, verdict, mode?} or {verdict, mode?, reason?}.

    `verdict` is SAFE or UNSAFE; with a taxonomy, `mode` is one of its mode names or
    "none"; `reason` is omitted when `reason_max_chars` is 0. With `reason_first` the
    reason is written before the verdict (a short chain of thought the verdict can
    follow); otherwise last, after the decision (cheaper: the verdict needs no reason).
    """
    verdict = Annotated[Literal["SAFE", "UNSAFE"],
                        WithJsonSchema({"type": "string", "enum": ["SAFE", "UNSAFE"]})]
    fields: dict[str, Any] = {}
    if reason_max_chars and reason_first:
        fields["reason"] = (_text(reason_max_chars, min_chars=0), ...)
    fields["verdict"] = (verdict, ...)
    if modes is not None:
        names = (*modes, "none")
        fields["mode"] = (
            Annotated[Literal[names], WithJsonSchema({"type": "string", "enum": list(names)})], ...)
    if reason_max_chars and not reason_first:
        fields["reason"] = (_text(reason_max_chars, min_chars=0), ...)
    return create_model("MonitorAnswer", __config__=_CLOSED, **fields)


def answer_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The JSON schema sent to a server for answers of `model`: references
    inlined, titles dropped, keywords in a fixed order."""
    return copy.deepcopy(_answer_schema(model))


@lru_cache(maxsize=1024)
def _answer_schema(model: type[BaseModel]) -> dict[str, Any]:
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def clean(node: Any) -> Any:
        if isinstance(node, list):
            return [clean(v) for v in node]
        if not isinstance(node, dict):
            return node
        if "$ref" in node:
            return clean(defs[node["$ref"].rsplit("/", 1)[-1]])
        out = {}
        for key in sorted(node, key=lambda k: _KEY_ORDER.index(k) if k in _KEY_ORDER else len(_KEY_ORDER)):
            if key == "title":
                continue
            if key == "properties":  # its keys are field names, not keywords
                out[key] = {name: clean(sub) for name, sub in node[key].items()}
            else:
                out[key] = clean(node[key])
        return out

    return clean(schema)


__all__ = [
    "answer_schema",
    "explanation_answer",
    "mode_answer",
    "mode_answer_for",
    "mode_choice_answer",
    "monitor_answer",
    "rephrase_answer",
    "report_answer",
    "taxonomy_answer",
    "taxonomy_answer_for",
]
