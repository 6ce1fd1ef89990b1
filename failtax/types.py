"""Records that flow between the pipeline's stages.

Each stage reads the previous stage's file and writes its own (see
docs/RUN_FORMAT.md); these dataclasses are the in-memory form of one line or
one file, with `to_dict`/`from_dict` that round-trip the JSON exactly.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

SCHEMA_VERSION = 1
OUTLIER = "outlier"
# The pipeline's stages, in order (failtax.pipeline runs them; a config may list a subset).
STAGES = ("downsample", "reason", "discover", "assign", "report")

InputMode = Literal["vision", "scene_text", "facts", "given", "report"]


@dataclass
class Keyframes:
    """Which frames of an episode the reasoner sees (keyframes.jsonl)."""

    episode_id: str
    indices: list[int]  # frame indices into the episode's frames, ascending
    failure_index: int  # the frame of the failure (last frame when unknown)
    method: str  # "clip", "fallback-descriptor", "fixed-rate"
    threshold: float | None = None
    embedder: str | None = None  # which image embedder ran (checkpoint or fallback name)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Keyframes:
        return cls(**d)


@dataclass
class Explanation:
    """One episode's failure explanation (explanations.jsonl)."""

    episode_id: str
    trajectory: str  # what the robot did
    failure_reason: str  # why it failed
    input_mode: InputMode
    model: str | None  # None when no model wrote it (facts / given)
    call_ids: list[str] = field(default_factory=list)
    degenerate: list[str] = field(default_factory=list)  # e.g. ["copied_input", "repetition"]
    # who wrote a `given` report (operator, fleet, site), from a column the user names;
    # discovery standardises features per writer so modes follow causes, not writers
    writer: str | None = None
    # input_mode "report": the human-written report the model read (failure_reason is the model's)
    report: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Explanation:
        return cls(**d)


@dataclass
class Mode:
    """One failure mode of a taxonomy."""

    name: str
    description: str
    keywords: list[str]
    frequency: float = 0.0  # share of explanations assigned to it (0..1)
    count: int = 0  # explanations assigned to it
    reported_frequency: float | None = None  # the share the discovery step claimed
    named_by: str = "model"  # "model" or "keywords" (fallback when the model's name was degenerate)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Mode:
        return cls(**d)


@dataclass
class Taxonomy:
    """The discovered taxonomy (taxonomy.json)."""

    modes: list[Mode]
    strategy: str  # "ensemble" or "cluster-then-name"
    candidates: list[list[Mode]] = field(default_factory=list)  # ensemble members before aggregation
    outlier_count: int = 0
    notes: dict[str, Any] = field(default_factory=dict)  # what a model decided vs code, degenerate counts
    schema_version: int = SCHEMA_VERSION

    @property
    def names(self) -> list[str]:
        return [m.name for m in self.modes]

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "strategy": self.strategy,
            "modes": [m.to_dict() for m in self.modes],
            "candidates": [[m.to_dict() for m in c] for c in self.candidates],
            "outlier_count": self.outlier_count,
            "notes": self.notes,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Taxonomy:
        return cls(
            modes=[Mode.from_dict(m) for m in d["modes"]],
            strategy=d["strategy"],
            candidates=[[Mode.from_dict(m) for m in c] for c in d.get("candidates", [])],
            outlier_count=d.get("outlier_count", 0),
            notes=d.get("notes", {}),
            schema_version=d.get("schema_version", SCHEMA_VERSION),
        )


@dataclass
class Assignment:
    """One episode's modes (assignments.jsonl); ["outlier"] when none fits."""

    episode_id: str
    modes: list[str]
    method: str  # "llm", "embedding", "llm+embedding-prefilter"
    scores: dict[str, float] = field(default_factory=dict)  # similarity per mode, when computed
    call_ids: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Assignment:
        return cls(**d)
