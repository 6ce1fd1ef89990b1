"""Typed configuration of the closed loop (values in configs/loop/*.yaml).

`LoopConfig` nests the navigation stack's `NavConfig` (expert, CNN, collection,
training, evaluation) and the failure-analysis `PipelineConfig`, and adds what
only the loop decides: the arms, the budget B, how B is split across failure
modes, the evaluation sets, and how failure modes become regions.

Example:
    >>> cfg = load_loop_config("quick", {"budget_samples": 2000})
"""

from __future__ import annotations

import os
from typing import Any, Literal

from pydantic import Field, model_validator

from common import StrictModel, load_yaml, resolve_preset
from failtax.config import PipelineConfig
from nav_policy.config import NavConfig

# targeted_semantic: collision sites + objects whose kind matches a mode's text;
# targeted_collision: collision sites only (needs no taxonomy); targeted_shuffled: the
# semantic arm with each mode's kinds moved to another mode (the control that says whether
# the mode-to-kind matching matters); uniform: anywhere in the family. site_semantic /
# site_uniform collect in a new site (eval.ood_family, map known, no failure there yet):
# near the kinds the modes match, or anywhere; evaluated on that site's held-out set.
ARMS = ("targeted_semantic", "targeted_collision", "targeted_shuffled", "uniform",
        "site_semantic", "site_uniform")
ArmName = Literal["targeted_semantic", "targeted_collision", "targeted_shuffled", "uniform",
                  "site_semantic", "site_uniform"]
SITE_ARMS = ("site_semantic", "site_uniform")


class BaseStageConfig(StrictModel):
    """The policy the loop starts from."""

    # an existing checkpoint to start from; None: collect `budget_samples` uniformly and train
    checkpoint: str | None = None
    # uniform expert samples of the base dataset (also the "base" data every arm fine-tunes on)
    budget_samples: int = Field(4000, ge=1)
    # collection seed of the base dataset (arms use seeds derived from LoopConfig.seed)
    seed: int = 0
    # base dataset folder to reuse (None: collected into the loop's folder)
    data_dir: str | None = None


class EvalSetsConfig(StrictModel):
    """Fixed evaluation sets and the failure-mining set (never the same rollouts)."""

    # rollouts of the in-distribution set (office_a) per policy
    in_distribution_rollouts: int = Field(50, ge=1)
    # rollouts of the held-out set (office_b) per policy; 0 skips OOD evaluation
    ood_rollouts: int = Field(50, ge=0)
    in_distribution_family: str = "office_a"  # family the policy trains in
    ood_family: str = "office_b"  # held-out family
    eval_set_seed: int = Field(0, ge=0)  # which fixed evaluation set (shared by every arm)
    # rollouts of the base policy whose failures feed discovery (a different set, so the
    # taxonomy and regions are never fitted to the evaluation rollouts)
    mining_rollouts: int = Field(100, ge=1)
    mining_set_seed: int = Field(1, ge=0)  # fixed set used for failure mining
    # also evaluate the camera-blind route follower (the base policy's prior, which never
    # looks) on the same sets: the camera policy must beat it for the camera to matter
    camera_blind: bool = False


class RegionsConfig(StrictModel):
    """How failure modes become regions (loop.regions)."""

    # radius (m) of a collision site around the robot's pose at the failure step
    collision_radius_m: float = Field(0.8, gt=0)
    # collision sites of one mode closer than this (m) are merged into one circle
    merge_sites_within_m: float = Field(0.3, ge=0)
    # objects within this distance (m) of a collision site are listed as the site's objects
    site_object_radius_m: float = Field(0.5, ge=0)
    # a kind matches a mode at this score or above. With semantic_score "centred" (cosine minus
    # the mode's mean over all kinds, MiniLM): short sensor-phenomenon texts scored their kinds
    # 0.18-0.41, vague texts ("the robot failed", "collided with an object close by") <= 0.11
    # (tests/loop/test_regions.py); the 1.5B model's wordier "Depth Sensor Failure" mode scored
    # glass 0.15 (docs/LOOP.md). With "cosine" 0.3 was the old threshold
    semantic_min_similarity: float = Field(0.14, ge=-1, le=1)
    # ... and within this margin of the mode's best kind (keeps only the closest kinds)
    semantic_margin: float = Field(0.1, ge=0)
    # what stands for a mode in the match: "mode" (the model's name, description and keywords),
    # "members" (mean over the failure explanations assigned to it; these are written by code
    # from the logs, so this reads the explanations rather than the taxonomy) or
    # "mode_and_members" (average)
    semantic_source: Literal["mode", "members", "mode_and_members"] = "mode"
    # what stands for an object kind: "sensor" (how its class looks to the robot's sensors,
    # loop.regions.SENSOR_DESCRIPTIONS, e.g. glass: "the depth sensor did not see it") or
    # "name" ("glass door made of glass": only matches mode texts that name classes)
    kind_text: Literal["sensor", "name"] = "sensor"
    # per-class sensor descriptions replacing the built-in ones (another robot, other sensors)
    kind_descriptions: dict[str, str] = Field(default_factory=dict)
    # "centred": cosine minus the mode's mean cosine over all kinds (a vague text close to
    # everything matches nothing); "cosine": the raw similarity
    semantic_score: Literal["centred", "cosine"] = "centred"
    # seed of the shuffled-taxonomy control (targeted_shuffled)
    shuffle_seed: int = 0
    # at most this many (class, material) kinds per mode
    semantic_max_kinds: int = Field(2, ge=1)
    # "family": matching objects in every building of the family (any building seed);
    # "failure_buildings": only in the buildings where the mode's failures happened
    semantic_scope: Literal["family", "failure_buildings"] = "family"
    # buildings scanned for the (class, material) catalogue of the family
    catalogue_buildings: int = Field(8, ge=1)
    # targeted_semantic arm: share of each mode's budget spent at its collision sites
    collision_share_in_semantic: float = Field(0.5, ge=0, le=1)
    # pass-near distance (m) written into every region (nav collect.region_radius_m otherwise)
    pass_near_radius_m: float = Field(1.0, gt=0)
    # replay starts of a collision site: the failing robot's pose this many seconds before
    # its collision, with its goal (collected at nav collect.replay_share of the episodes)
    replay_offsets_s: list[float] = Field(default_factory=lambda: [1.0, 2.0, 4.0])
    # text embedder of the semantic match (failtax.embedding kinds: minilm, hashing)
    embedder: Literal["minilm", "hashing"] = "minilm"


class LoopConfig(StrictModel):
    """Everything `failtax close-loop` reads."""

    nav: NavConfig = Field(default_factory=NavConfig)  # sim, expert, CNN, collect/train/evaluate
    pipeline: PipelineConfig = Field(default_factory=PipelineConfig)  # failtax discover
    base: BaseStageConfig = Field(default_factory=BaseStageConfig)  # starting policy
    eval: EvalSetsConfig = Field(default_factory=EvalSetsConfig)  # evaluation and mining sets
    regions: RegionsConfig = Field(default_factory=RegionsConfig)  # modes -> regions
    # arms compared at the same budget and seeds
    arms: list[ArmName] = Field(
        default_factory=lambda: ["targeted_semantic", "targeted_collision", "uniform"])
    budget_samples: int = Field(4000, ge=1)  # B: new expert samples per arm and cycle
    # how B is split across modes: by assigned frequency, equally, or by sqrt(frequency)
    split: Literal["frequency", "equal", "sqrt_frequency"] = "frequency"
    # modes below this assigned frequency get no budget (their share goes to the others)
    min_mode_frequency: float = Field(0.0, ge=0, lt=1)
    # how every arm spends its B samples: "expert" (the expert drives and labels) or "dagger"
    # (the arm's current policy drives with probability 1 - dagger_beta per step and the
    # expert labels every visited state, so labels land where the policy itself goes wrong)
    collection: Literal["expert", "dagger"] = "expert"
    dagger_beta: float = Field(0.5, ge=0, le=1)  # dagger: probability the expert's action runs
    cycles: int = Field(1, ge=1)  # discover -> collect -> fine-tune rounds per arm
    # independent repeats of every arm (collection seed and fine-tuning seed differ per
    # replicate; base policy, taxonomy and regions are shared). Replicate 0 is the plain
    # run, so raising this on a finished folder only adds the new replicates. The report
    # pools them: one arm's failure rate moves with its collection and training seeds by
    # about as much as arms differ (docs/results/loop-full-seed1-60deg/; git history keeps it:
    # e276022)
    replicates: int = Field(1, ge=1)
    seed: int = 1  # collection seed of the arms (the same for every arm; != base.seed)
    # fine-tuning epochs (None: nav.train.epochs)
    finetune_epochs: int | None = Field(None, ge=1)
    preset: str | None = None  # name of the preset this config came from (informational)

    @model_validator(mode="after")
    def _check(self) -> LoopConfig:
        if not self.arms:
            raise ValueError("arms is empty; list at least one of " + ", ".join(ARMS))
        if len(set(self.arms)) != len(self.arms):
            raise ValueError(f"arms lists an arm twice: {self.arms}")
        if self.eval.in_distribution_family == self.eval.ood_family and self.eval.ood_rollouts:
            raise ValueError("eval.ood_family equals eval.in_distribution_family; pick the held-out "
                             "family (office_b) or set eval.ood_rollouts: 0")
        if (self.eval.mining_set_seed == self.eval.eval_set_seed):
            raise ValueError("eval.mining_set_seed equals eval.eval_set_seed: failures for discovery "
                             "must come from a different set than the evaluation; change one")
        site = [a for a in self.arms if a in SITE_ARMS]
        if site and not self.eval.ood_rollouts:
            raise ValueError(f"arms {site} collect in the new site eval.ood_family and are judged "
                             "on its held-out set; set eval.ood_rollouts > 0")
        if site and self.cycles > 1:
            raise ValueError(f"arms {site} collect once, before the robot works in the new site; "
                             "use cycles: 1 (or drop them from arms)")
        if self.base.seed == self.seed:
            raise ValueError("base.seed equals seed: the uniform arm would recollect the base data; "
                             "use different seeds")
        return self


def load_loop_config(name_or_path: str | os.PathLike | None = None,
                     overrides: dict[str, Any] | None = None) -> LoopConfig:
    """Load a LoopConfig from a preset name (`quick`, `full`: configs/loop/) or a YAML path
    (None: defaults), with dotted overrides. The sim config `nav.sim` names is read here, once,
    and the result holds it resolved (`cfg.nav.sim` is a `SimConfig`)."""
    path = None if name_or_path is None else resolve_preset(name_or_path, "loop")
    cfg = load_yaml(LoopConfig, path, overrides)
    if path is not None and cfg.preset is None:
        cfg = cfg.model_copy(update={"preset": path.stem})
    return cfg
