"""Typed configuration of the navigation policy stack (values in configs/nav/*.yaml).

`NavConfig` nests one model per stage: the simulator, the expert (planner +
MPC), the CNN, collection, training and evaluation. Load one with
`load_nav_config(path_or_preset, overrides)`; unknown keys are errors.

The simulator section is resolved once, when the config is loaded: a YAML
file names a sim config (`sim: {config_path: configs/sim/nav.yaml, overrides:
{...}}`), and `NavConfig.sim` holds the resulting `SimConfig`, which every
stage uses and the resolved config written into a run folder records.

Example:
    >>> cfg = load_nav_config("default", {"collect.budget_samples": 2000})
    >>> cfg.sim.camera.fov_deg  # configs/sim/nav.yaml's 60, overridden in the preset
    90.0
"""

from __future__ import annotations

import os
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from common import StrictModel, load_yaml, resolve_preset
from sim.config import SimConfig, load_sim_config

# Reset seeds of evaluation sets live at or above this offset; training and
# collection seeds are reduced below it, so the two can never overlap.
EVAL_SEED_OFFSET = 1 << 40


class SimRefConfig(StrictModel):
    """How a YAML file names the simulator: a sim YAML and dotted overrides on top.

    Only an input form: loading a NavConfig turns it into `NavConfig.sim`, a `SimConfig`.
    """

    # sim YAML: a path or a configs/sim/ preset name (None: sim defaults)
    config_path: str | None = "configs/sim/nav.yaml"
    # Dotted-key overrides applied on top, e.g. {"episode.time_limit_s": 40}.
    overrides: dict[str, Any] = Field(default_factory=dict)

    def resolve(self) -> SimConfig:
        """The SimConfig this reference names, with the `route` observation on.

        Policies with `model.target_input: route` read the route point and
        datasets record it, so the nav stack always turns it on.
        """
        return _with_route(load_sim_config(self.config_path, self.overrides))


def _with_route(sim: SimConfig) -> SimConfig:
    if sim.observation.route == "obs":
        return sim
    return sim.model_copy(update={"observation": sim.observation.model_copy(
        update={"route": "obs"})})


class MPCConfig(StrictModel):
    """CasADi MPC that tracks the global path under unicycle limits."""

    solver: Literal["fatrop", "ipopt"] = "fatrop"  # primary NLP solver
    # On failure: this solver, then pure pursuit.
    fallback: Literal["ipopt", "pure_pursuit", "none"] = "ipopt"
    horizon_steps: int = Field(15, ge=3, le=60)  # prediction horizon (steps of the sim's dt_s)
    obstacles_per_stage: int = Field(6, ge=1, le=24)  # nearest surfaces constrained at each stage
    obstacle_search_radius_m: float = Field(3.0, gt=0)  # farther surfaces are ignored
    safety_margin_m: float = Field(0.04, ge=0)  # kept between body and surface beyond the radius
    track_weight: float = Field(4.0, gt=0)  # cost per m² of distance to the reference point
    terminal_weight: float = Field(20.0, ge=0)  # extra cost on the last reference point
    heading_weight: float = Field(0.2, ge=0)  # cost on heading error to the path tangent
    accel_weight: float = Field(0.05, ge=0)  # cost per (m/s²)² of acceleration
    turn_weight: float = Field(0.05, ge=0)  # cost per (rad/s)² of turn rate
    turn_change_weight: float = Field(0.5, ge=0)  # cost per (rad/s)² of turn-rate change per step
    slack_weight: float = Field(2000.0, gt=0)  # cost per metre of violated obstacle distance
    max_iterations: int = Field(60, ge=1)  # solver iteration cap
    tolerance: float = Field(1e-4, gt=0)  # solver convergence tolerance


class ExpertConfig(StrictModel):
    """Privileged expert: global path on the true map + MPC tracking."""

    kind: Literal["mpc", "pure_pursuit"] = "mpc"  # controller that tracks the path
    cruise_speed_mps: float = Field(0.8, gt=0)  # speed on straight, open stretches
    lateral_accel_mps2: float = Field(0.6, gt=0)  # curvature speed limit v² κ <= this
    decel_mps2: float = Field(0.8, gt=0)  # braking used for the speed profile (goal, curves)
    slow_clearance_m: float = Field(0.55, gt=0)  # below this clearance the profile slows down
    slow_speed_fraction: float = Field(0.5, gt=0, le=1)  # speed fraction at minimum clearance
    smoothing_window_m: float = Field(0.6, ge=0)  # moving-average window that rounds grid corners
    replan_distance_m: float = Field(0.5, gt=0)  # replan when this far from the current path
    lookahead_m: float = Field(0.6, gt=0)  # pure-pursuit lookahead (fallback controller)
    # The expert's own path cost: below `preferred_clearance_m` a cell costs
    # 1 + clearance_weight * ((preferred - c) / preferred)² per metre (sim GridPlanner).
    # None: the sim world's planner (0.6 m, weight 4). A wider berth makes each avoidance
    # start earlier and swing wider, so it shows in more frames and leaves an imitating
    # policy room for error.
    preferred_clearance_m: float | None = Field(None, gt=0)
    clearance_weight: float = Field(4.0, ge=0)
    mpc: MPCConfig = MPCConfig()  # the tracking MPC


class ModelConfig(StrictModel):
    """The CNN policy: RGB image + ego velocity + goal -> (speed, turn-rate) command."""

    # Conv channels; each block halves the resolution.
    channels: list[int] = Field(default_factory=lambda: [16, 32, 32, 64])
    hidden_units: int = Field(128, ge=8)  # width of the fully connected layers
    goal_range_m: float = Field(10.0, gt=0)  # goal distance is divided by this and clipped at 1
    # Ego velocity the net sees. The turn rate invites "copycat" cloning (the
    # next turn rate is nearly the current one; the same holds for speed), so by
    # default none: the command is absolute and needs no ego state.
    ego_inputs: Literal["speed_turn", "speed", "none"] = "none"
    # Where the net is told to go: "route", the sim's floor-plan route point a
    # little ahead (the robot knows the architecture, not the clutter), or
    # "goal", the final goal only (the net must find doorways by itself).
    target_input: Literal["route", "goal"] = "route"
    # What the net's output is added to. "none": the net outputs the whole command.
    # "route_pursuit": the command of a camera-blind follower that steers at the route
    # point (`pursuit_command`), so the net learns only the correction the camera calls
    # for (clutter the floor plan leaves out) and path tracking is never lost to
    # imitation error. Needs target_input "route".
    prior: Literal["none", "route_pursuit"] = "none"
    prior_speed_mps: float = Field(0.8, gt=0)  # the follower's cruise speed
    dropout: float = Field(0.0, ge=0, lt=1)  # dropout before the output layer

    @model_validator(mode="after")
    def _prior_needs_route(self) -> ModelConfig:
        if self.prior == "route_pursuit" and self.target_input != "route":
            raise ValueError("model.prior 'route_pursuit' steers at the route point; "
                             "set model.target_input: route")
        return self


class CollectConfig(StrictModel):
    """Expert data collection."""

    arm: Literal["uniform", "targeted"] = "uniform"  # how start/goal pairs are drawn
    budget_samples: int = Field(20000, ge=1)  # labelled states to collect (equal-cost comparison)
    seed: int = 0  # seed of the collection run (starts, goals, buildings)
    family: str = "office_a"  # building family to collect in
    samples_per_shard: int = Field(2000, ge=1)  # approximate shard size (whole episodes per shard)
    num_workers: int = Field(2, ge=1)  # worker processes
    regions_path: str | None = None  # regions.json for the targeted arm
    region_radius_m: float = Field(1.0, gt=0)  # pass-near distance to a region's objects/points
    # targeted: path-length range [min, max] (m) of its start/goal pairs; None: the sim's
    # episode range. Short pairs spend the budget around the region instead of the whole
    # way from a distant start to a distant goal.
    targeted_path_m: tuple[float, float] | None = None
    # targeted: share of episodes that start 0.8-2 m from the region's objects, facing them
    # (sim MapQuery.sample_starts_facing): the approach a failing policy takes, and the
    # expert's recovery from it, which pass-near paths never show
    facing_share: float = Field(0.0, ge=0, le=1)
    # targeted: share of a region's episodes that replay one of its logged `starts` (the
    # failing robot's pose seconds before its collision, heading for its own goal): under
    # DAgger the policy drives into the very situation it failed in while the expert labels
    replay_share: float = Field(0.0, ge=0, le=1)
    replay_max_steps: int | None = Field(None, ge=1)  # cap on a replayed episode (None: none)
    # targeted: share of episodes drawn as the uniform arm draws them (any start and goal),
    # so a policy fine-tuned on the data still sees ordinary driving: corners and doorways
    # (without it, targeted fine-tuning traded hazard failures for corner failures)
    coverage_share: float = Field(0.0, ge=0, le=1)
    start_noise_yaw_rad: float = Field(0.0, ge=0)  # extra heading noise at the start (augmentation)
    # Noise added to the executed action while the label stays the expert's
    # (DART-style), so the data shows how to recover from small drifts.
    action_noise_std: tuple[float, float] = (0.0, 0.0)  # [accel m/s², turn rate rad/s]
    # Label every state with the expert's command as if it had been obeyed: the expert
    # carries on from the turn rate it asked for, not the one the noise (or the DAgger
    # policy) executed. Its MPC penalises turn-rate changes, so with the executed rate the
    # label would echo the noise the network never sees, drowning the steering signal.
    intent_labels: bool = True
    dagger_checkpoint: str | None = None  # policy that drives while the expert labels (DAgger)
    dagger_beta: float = Field(0.5, ge=0, le=1)  # probability the expert's action is executed
    max_episode_steps: int | None = Field(None, ge=1)  # cap per episode (None: the sim's limit)
    drop_failed_episodes: bool = True  # discard episodes where the expert itself collided
    # collect in floors whose colours and textures are redrawn per floor by up to this much
    # (sim `world.appearance_jitter`), so a policy learns hazards rather than one family's
    # look; evaluation keeps the sim config's own palette
    appearance_jitter: float = Field(0.0, ge=0, le=0.5)


class TrainConfig(StrictModel):
    """Training and fine-tuning."""

    seed: int = 0  # seed for initialisation, data order and validation split
    epochs: int = Field(8, ge=1)  # passes over the training data
    batch_size: int = Field(128, ge=1)  # samples per optimiser step
    learning_rate: float = Field(1e-3, gt=0)  # AdamW learning rate
    weight_decay: float = Field(1e-4, ge=0)  # AdamW weight decay
    turn_loss_weight: float = Field(1.0, ge=0)  # weight of the turn-rate term of the loss
    val_fraction: float = Field(0.05, ge=0, lt=1)  # episodes held out for validation loss
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: CUDA when present, else CPU
    num_threads: int = Field(1, ge=1)  # CPU threads (fixed so runs are reproducible)
    deterministic: bool = True  # torch.use_deterministic_algorithms
    brightness_jitter: float = Field(0.1, ge=0, lt=1)  # random image brightness scale ± this


class EvaluateConfig(StrictModel):
    """Failure-rate evaluation on fixed, held-out start/goal sets."""

    num_rollouts: int = Field(50, ge=1)  # episodes per evaluation set
    family: str = "office_a"  # building family (office_a in-distribution, office_b held out)
    eval_set_seed: int = Field(0, ge=0)  # which fixed evaluation set (index, not a training seed)
    save_failures: bool = True  # write collision episodes in the episode format
    save_all: bool = False  # also write successes and timeouts
    frame_stride: int = Field(1, ge=1)  # keep a frame every this many steps
    device: Literal["auto", "cpu", "cuda"] = "cpu"  # inference device
    num_workers: int = Field(1, ge=1)  # rollout worker processes
    # policy (and route-follower) rollouts stepped together per worker: one batched CNN
    # forward and one simulator step per control step for all of them (1: one env at a
    # time). Rollouts that record episodes (save_failures / save_all) run one at a time.
    batch_size: int = Field(1, ge=1)


class NavConfig(StrictModel):
    """Everything the `failtax nav` commands read."""

    # The simulator, resolved at load time. In YAML either a reference to a sim YAML,
    # {config_path, overrides} (SimRefConfig), or the sim config's values themselves.
    sim: SimConfig = Field(default_factory=lambda: SimRefConfig().resolve())
    expert: ExpertConfig = ExpertConfig()  # expert planner and controller
    model: ModelConfig = ModelConfig()  # CNN policy
    collect: CollectConfig = CollectConfig()  # data collection
    train: TrainConfig = TrainConfig()  # training / fine-tuning
    evaluate: EvaluateConfig = EvaluateConfig()  # evaluation

    @field_validator("sim", mode="before")
    @classmethod
    def _resolve_sim(cls, value: Any) -> Any:
        ref_keys = set(SimRefConfig.model_fields)
        if isinstance(value, dict) and ref_keys & value.keys():
            values = sorted(value.keys() - ref_keys)
            if values:
                raise ValueError(
                    f"sim names a sim YAML ({', '.join(sorted(ref_keys & value.keys()))}) and "
                    f"also gives sim values ({', '.join(values)}); put the values into "
                    "sim.overrides, e.g. sim: {config_path: ..., overrides: {camera.fov_deg: 90}}")
            return SimRefConfig.model_validate(value).resolve()
        return value

    @field_validator("sim", mode="after")
    @classmethod
    def _route_on(cls, sim: SimConfig) -> SimConfig:
        return _with_route(sim)

    @model_validator(mode="after")
    def _check(self) -> NavConfig:
        tp = self.collect.targeted_path_m
        if tp is not None and not 0 < tp[0] < tp[1]:
            raise ValueError(f"collect.targeted_path_m {list(tp)}: give [min, max] with "
                             "0 < min < max")
        if self.collect.arm == "targeted" and not self.collect.regions_path:
            raise ValueError("collect.arm 'targeted' needs collect.regions_path (a regions.json)")
        if self.expert.mpc.fallback == self.expert.mpc.solver:
            raise ValueError(
                f"expert.mpc.fallback equals expert.mpc.solver ({self.expert.mpc.solver}); "
                "pick a different fallback or 'pure_pursuit'"
            )
        return self


def load_nav_config(
    path: str | os.PathLike | None = None, overrides: dict[str, Any] | None = None
) -> NavConfig:
    """Load a `NavConfig` from YAML or a configs/nav/ preset name (None: defaults) with
    dotted-key overrides; the sim config it names is read here, once."""
    return load_yaml(NavConfig, None if path is None else resolve_preset(path, "nav"), overrides)
