"""Typed configuration of a failtax pipeline run.

One model per stage, nested into `PipelineConfig`; YAML files under
configs/pipeline/ hold values only. Load with
`common.load_yaml(PipelineConfig, path, overrides)` or `load_config`.

`PipelineConfig` nests the configs of `serving`, `failtax.discovery` and
`failtax.assignment`; none of those imports this module, and neither do the
leaf modules it reads the stage names from (failtax.types).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from common import StrictModel, load_yaml
from failtax.assignment import AssignmentConfig
from failtax.discovery.config import DiscoveryConfig
from failtax.types import STAGES
from serving.config import BackendConfig
from serving.embedded import DEFAULT_LOCAL
from serving.recipes import recipe_names, recipe_window


class SourceConfig(StrictModel):
    """Where the failure logs come from (failtax.sources)."""

    # "auto" guesses from the path; or episodes | image_folders | video | dashcam |
    # manipulation | lerobot | mcap | explanations (docs/INPUTS.md)
    kind: str = "auto"
    # episodes folder, video folder/file or CSV/JSONL; the CLI argument overrides it
    path: str | None = None
    # episode-format outcomes analysed as failures; others are recorded as skipped
    outcomes: list[str] = Field(default_factory=lambda: ["collision", "timeout", "failure"])
    # video sources: frames per second kept when decoding (0 keeps every frame)
    video_sample_fps_hz: float = 5.0
    # video sources: keep at most this many frames, counted back from the end
    video_max_frames: int = 600
    # stop after this many episodes (0 = all); handy for a first look at a big folder
    max_episodes: int = 0
    # explanations CSV/JSONL: the column naming who wrote each report (operator, fleet,
    # site); None = writers are inferred from shared boilerplate (docs/JUDGEMENT.md)
    writer_column: str | None = None
    # labels CSV (episode_id[, outcome][, failure_time_s][, failure_frame]): which episodes
    # failed and when; for lerobot, mcap, dashcam and manipulation inputs (docs/INPUTS.md)
    labels_path: str | None = None
    # lerobot: the data column that says an episode succeeded (bool/0-1, any true row = success),
    # e.g. "next.success"; one of this or labels_path is needed to tell failures apart
    success_column: str | None = None
    # lerobot: the camera (video/image feature key) whose frames are read; None = the first
    camera_key: str | None = None
    # mcap: the image topic (sensor_msgs/Image or CompressedImage); None = the first one
    image_topic: str | None = None
    # mcap: the odometry topic (nav_msgs/Odometry); None = the first one, if any
    odom_topic: str | None = None
    # mcap: a topic whose first message marks the failure (e.g. /bumper, /estop); None =
    # failure times from labels_path, else the end of the bag. A bag without it is an error
    failure_topic: str | None = None


class DownsampleConfig(StrictModel):
    """Key-frame selection around the failure (failtax.downsample)."""

    # "change_point" (the paper's bidirectional selection) or "fixed_rate" (baseline)
    method: Literal["change_point", "fixed_rate"] = "change_point"
    # frame embedder: "auto" (clip if clip_checkpoint_path else descriptor), clip, open_clip, descriptor
    embedder: str = "auto"
    # local folder of a transformers CLIP checkpoint (nothing is downloaded)
    clip_checkpoint_path: str | None = None
    # open_clip architecture name and local weights file, for boxes where torchvision works
    open_clip_model: str = "ViT-B-32"
    open_clip_weights_path: str | None = None
    # frames considered before the failure frame
    window_before_frames: int = 40
    # frames considered after the failure frame
    window_after_frames: int = 5
    # a frame is kept when its cosine similarity to the last kept frame falls below this
    similarity_threshold: float = 0.92
    # at most this many frames per episode, failure frame included
    max_frames: int = 8
    # when fewer frames change enough, pad with evenly spaced earlier frames up to this many
    # (motion between frames needs at least two; 1 = the paper's selection unpadded)
    min_frames: int = 3
    # images per embedder forward pass
    batch_size: int = 16

    @model_validator(mode="after")
    def _check(self) -> DownsampleConfig:
        if self.max_frames < 1:
            raise ValueError(
                "downsample.max_frames must be >= 1 (the failure frame is always kept)"
            )
        if not 1 <= self.min_frames <= self.max_frames:
            raise ValueError("downsample.min_frames must be between 1 and downsample.max_frames")
        if not -1.0 <= self.similarity_threshold <= 1.0:
            raise ValueError(
                "downsample.similarity_threshold is a cosine similarity: set it within [-1, 1]"
            )
        if self.window_before_frames < 0 or self.window_after_frames < 0:
            raise ValueError("downsample window sizes must be >= 0 frames")
        return self


# Channels a simulator records but a robot does not log: its noise-free semantic class
# and instance (object id) images map almost one-to-one onto the hidden failure causes.
PRIVILEGED_CHANNELS = ("semantic", "instance")


class SceneConfig(StrictModel):
    """Scene descriptions from the robot's logged channels (failtax.scene).

    The defaults use what a real robot logs: depth and RGB (plus pose, velocity,
    goal and the outcome from steps.jsonl and meta.json). The simulator-only
    `semantic` / `instance` channels and `class_names` are PRIVILEGED: opt-in, and
    a run that uses them says so ("privileged simulator channels used").
    """

    # privileged: include semantic class names ("glass_door"); False = geometry only.
    # An episode whose meta.json declares a `detector` channel (a real object detector's
    # class image) gets class names from it without this flag.
    class_names: bool = False
    # channels allowed into a description: depth and rgb (appearance cues); the privileged
    # simulator channels semantic and instance only when listed here explicitly
    channels: list[str] = Field(default_factory=lambda: ["depth", "rgb"])
    # class names never listed as objects (surfaces, not obstacles)
    ignore_classes: list[str] = Field(default_factory=lambda: ["void", "floor", "ceiling"])
    # objects covering fewer pixels than this share of the image are ignored
    min_object_fraction: float = 0.002
    # at most this many objects per frame, nearest first
    max_objects: int = 5
    # objects whose bearing is within this many degrees of the heading are "ahead"
    ahead_half_angle_deg: float = 10.0
    # a distance change smaller than this between kept frames is "steady"
    motion_threshold_m: float = 0.1
    # rgb: an object whose luminance std (0-255) inside it is below this is "featureless"
    featureless_texture_max: float = 2.0
    # rgb: one whose mean colour differs from its surroundings by less than this is "faint"
    faint_contrast_max: float = 12.0
    # facts mode: the failure summary reads this many last kept frames
    facts_last_frames: int = 3
    # depth-only objects: pixels whose 3-D point lies this high above the floor and below
    # obstacle_max_height_m are obstacles (needs meta.camera.height_m)
    obstacle_min_height_m: float = 0.04
    obstacle_max_height_m: float = 1.8
    # depth-only objects: neighbouring pixels whose depths differ by more than this share
    # belong to different objects
    depth_jump_ratio: float = 0.12
    # facts: a collision while depth showed free space ahead (the sector within
    # ahead_half_angle_deg) beyond this distance is a depth miss
    depth_miss_m: float = 0.8
    # facts: ... unless depth showed an obstacle this close on the left or right: then the
    # robot clipped it with its side (a corner, a narrow passage), which depth did see
    side_contact_m: float = 0.35
    # facts: an obstacle first seen in depth nearer than this "appeared only when close"
    late_appearance_m: float = 2.8
    # facts: what the failure reason says. hazard: what was hit, as the sensors saw it
    # ("Collision with a thin vertical obstacle."), with how the robot met it moved to the
    # trajectory; hazard_and_approach: both in the reason. Discovery clusters the reason:
    # on three simulator sets the approach split one hazard's failures by how they were met
    # (cause NMI, code only: 0.589 vs 0.545; docs/JUDGEMENT.md)
    facts_reason: Literal["hazard", "hazard_and_approach"] = "hazard"

    @property
    def privileged(self) -> list[str]:
        """The simulator-only inputs this config lets in (empty for a robot's logs)."""
        used = [c for c in self.channels if c in PRIVILEGED_CHANNELS]
        return used + (["class_names"] if self.class_names else [])


class ReasoningConfig(StrictModel):
    """Failure reasoning: frames or scene text in, {trajectory, failure_reason} out."""

    # prompt pack: auto (each episode's source says: lerobot/manipulation -> manipulation,
    # dashcam -> driving, else navigation) | navigation | manipulation | driving
    domain: Literal["auto", "navigation", "manipulation", "driving"] = "auto"
    # vision (VLM gets frames) | scene_text (text model gets scene descriptions) | facts (no model) | given
    input_mode: Literal["vision", "scene_text", "facts", "given"] = "facts"
    # prompt files in failtax/prompts/ (or a path) per model-backed mode
    vision_prompt: str = "reason_vision.txt"
    scene_text_prompt: str = "reason_scene_text.txt"
    # ask for a short chain-of-thought field before the answer
    include_reasoning: bool = True
    # character caps of the structured answer (every string is capped, or small models run away)
    reasoning_max_chars: int = 400
    trajectory_max_chars: int = 240
    failure_reason_max_chars: int = 240
    # completion token budget; None = the schema's worst case (one token per capped character)
    max_tokens: int | None = None
    temperature: float = 0.0
    # reasoning calls in flight at once
    concurrency: int = 4
    # scene descriptions in a prompt are cut to this many characters, oldest frames first
    scene_text_max_chars: int = 4000
    # CSV/JSONL failure reports written by people: extract (the model reads each report and says
    # what was hit or went wrong, in one voice for every writer, so modes follow the cause rather
    # than who wrote the report; failtax/reading.py) | as_is (cluster the texts as written; writer
    # invariance by code) | auto (extract with any model but the tiny embedded one)
    reports: Literal["auto", "extract", "as_is"] = "auto"
    report_prompt: str = "read_report.txt"
    # vision mode: also give the VLM the scene descriptions (when the logs have channels)
    vision_scene_text: bool = False
    # degenerate flags that replace a model answer by the facts summary (empty, repetition, copied_input, truncated)
    fallback_on_degenerate: list[str] = Field(default_factory=lambda: ["empty", "repetition"])

    @model_validator(mode="after")
    def _check(self) -> ReasoningConfig:
        chars = self.trajectory_max_chars + self.failure_reason_max_chars
        chars += self.reasoning_max_chars if self.include_reasoning else 0
        # ~3 characters per token is conservative for English; JSON keys add ~30 tokens.
        too_few = self.max_tokens is not None and self.max_tokens < chars // 3 + 30
        if self.input_mode in ("vision", "scene_text") and too_few:
            raise ValueError(
                f"reasoning.max_tokens={self.max_tokens} cannot hold the capped strings ({chars} chars); "
                f"raise it to at least {chars // 3 + 30}, leave it unset (auto), or lower the *_max_chars caps"
            )
        if self.concurrency < 1:
            raise ValueError("reasoning.concurrency must be >= 1")
        return self


class PipelineConfig(StrictModel):
    """A whole `failtax discover` run."""

    source: SourceConfig = Field(default_factory=SourceConfig)
    downsample: DownsampleConfig = Field(default_factory=DownsampleConfig)
    scene: SceneConfig = Field(default_factory=SceneConfig)
    reasoning: ReasoningConfig = Field(default_factory=ReasoningConfig)
    backend: BackendConfig = Field(default_factory=BackendConfig)
    discovery: DiscoveryConfig = Field(default_factory=DiscoveryConfig)
    assignment: AssignmentConfig = Field(default_factory=AssignmentConfig)
    # run folder (the CLI's --run-dir overrides it)
    run_dir: str | None = None
    # one seed for every derived RNG and model call
    seed: int = 0
    # model-call cache shared across runs; overrides backend.cache_dir when set
    cache_dir: str | None = None
    # stages to run, in order; a run can stop early (e.g. [downsample, reason])
    stages: list[str] = Field(default_factory=lambda: list(STAGES))

    @model_validator(mode="after")
    def _check(self) -> PipelineConfig:
        unknown = [s for s in self.stages if s not in STAGES]
        if unknown:
            raise ValueError(f"unknown stage(s) {unknown}; valid, in order: {', '.join(STAGES)}")
        window = served_context_tokens(self.backend)
        if window and "context_tokens" not in self.discovery.model_fields_set:
            # discovery budgets its prompts to the served model's window unless told otherwise
            self.discovery = self.discovery.model_copy(update={"context_tokens": window})
        return self


def served_context_tokens(backend: BackendConfig) -> int | None:
    """The context window of the backend's recipe (the embedded default's when it names
    none); None when the backend names no known recipe."""
    name = backend.recipe or (DEFAULT_LOCAL if backend.kind == "embedded" else None)
    return recipe_window(name) if name in recipe_names() else None


def load_config(
    path: str | Path | None = None, overrides: dict[str, object] | None = None
) -> PipelineConfig:
    """Load a pipeline YAML, a run folder's config.yaml (its resolved `config`) or shipped
    preset name (None = all defaults) with dotted-key overrides.

    Raises:
        ValueError: unknown keys or bad values, naming the file and the key.
    """
    return load_yaml(PipelineConfig, path, overrides, kind="pipeline", record_key="config")
