"""`failtax convert`: the failure episodes of any source, written in the episode format.

Reads an input with the same readers `failtax discover` uses (LeRobot, ROS 2
MCAP, dashcam videos, manipulation runs, image folders, videos) and writes one
episode folder per failure with `common.episode.write_episode`: the kept frames
(resampled as `source.video_sample_fps_hz` / `source.video_max_frames` say) as
PNGs, steps.jsonl where the log has poses (odometry), else a frames-only
episode, and meta.json with the outcome, the failure frame, and what the source
knew: task, executed plan, domain, camera key or topic, frame times.

Streaming: one episode's frames are in memory at a time. Resumes: an episode
already written is skipped (`--overwrite` rewrites it). An input the reader
rejects, or whose frames cannot be decoded, is one line of
`<out>/convert_errors.jsonl` and the conversion goes on.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, get_args

import click
import numpy as np
from tqdm.auto import tqdm

from common import append_jsonl, parse_sets
from common.episode import (
    META_FILE,
    CameraMeta,
    EpisodeMeta,
    Outcome,
    StepRecord,
    frame_name,
    write_episode,
)
from failtax.sources import Episode, EpisodeReadError, EpisodeSource, SourceError

ERRORS_FILE = "convert_errors.jsonl"
# meta keys a reader sets that are copied into meta.json as they are
CARRIED_META = ("task", "plan", "domain", "camera_key", "image_topic", "odom_topic",
                "failure_topic", "frame_times_s")


@dataclass
class ConvertResult:
    """What a conversion did."""

    converted: int  # episodes written in this run
    existing: int  # episodes already in the output folder (skipped)
    errors: int  # inputs skipped, each a line of convert_errors.jsonl
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def episode_meta(ep: Episode, frame_shape: tuple[int, ...], num_steps: int) -> EpisodeMeta:
    """meta.json of a converted episode, from what its reader knew."""
    meta = ep.meta or {}
    outcome = str(meta.get("outcome") or "failure")
    extra: dict[str, Any] = {k: meta[k] for k in CARRIED_META if meta.get(k) not in (None, [], "")}
    if outcome not in get_args(Outcome):
        extra["failure_label"] = outcome  # the user's word ("drop", "crash") is kept
        outcome = "failure"
    extra.setdefault("domain", ep.domain)
    times = meta.get("frame_times_s") or []
    dt = meta.get("dt_s") or (float(np.median(np.diff(times))) if len(times) > 1 else 0.1)
    # a log says nothing of the lens or mounting: null, not a made-up value
    camera = {"fov_deg": None, "height_m": None, **(meta.get("camera") or {}),
              "height": frame_shape[0], "width": frame_shape[1]}
    return EpisodeMeta(
        episode_id=ep.episode_id,
        source=str(meta.get("source") or ep.kind),
        robot=str(meta.get("robot") or "unknown"),
        dt_s=float(dt) if dt and dt > 0 else 0.1,
        num_steps=num_steps,
        camera=CameraMeta(**camera),
        outcome=outcome,
        failure_step=ep.failure_index,
        **extra,
    )


def step_records(ep: Episode) -> list[StepRecord]:
    """One step per frame when the reader logged poses for every frame, else [] (frames only)."""
    if not ep.steps or len(ep.steps) != ep.num_frames or ep.frame_steps != list(range(ep.num_frames)):
        return []
    return [
        StepRecord(**{**s, "step": i, "action": s.get("action"), "frame": frame_name(i)})
        for i, s in enumerate(ep.steps)
    ]


def convert_source(
    source: EpisodeSource, out: Path, *, overwrite: bool = False, progress: bool = False,
    max_episodes: int = 0,
) -> ConvertResult:
    """Write every failure episode of `source` into `out` in the episode format.

    Args:
        source: any episode source (failtax.sources.make_source).
        out: the episodes folder to write (created).
        overwrite: rewrite episodes that already exist (default: skip them, resuming).
        progress: show a progress bar.
        max_episodes: stop after this many episodes (0 = all).
    """
    start = time.monotonic()
    out.mkdir(parents=True, exist_ok=True)
    converted = existing = errors = seen = 0
    for item in tqdm(source.scan(), disable=not progress, desc="convert", unit="ep"):
        if isinstance(item, SourceError):
            append_jsonl(out / ERRORS_FILE, {**item.to_record(), "stage": "convert"})
            errors += 1
            continue
        seen += 1
        if max_episodes and seen > max_episodes:
            break
        if (out / item.episode_id / META_FILE).is_file() and not overwrite:
            existing += 1
            continue
        try:
            frames = {i: item.load_frame(i) for i in range(item.num_frames)}
            steps = step_records(item)
            meta = episode_meta(item, frames[0].shape, len(steps))
            write_episode(out, meta, steps, frames, overwrite=True)
        except (EpisodeReadError, ValueError) as e:
            kind = e.kind if isinstance(e, EpisodeReadError) else "bad_episode"
            message = e.message if isinstance(e, EpisodeReadError) else str(e)
            append_jsonl(out / ERRORS_FILE, {"stage": "convert", "episode_id": item.episode_id,
                                              "kind": kind, "message": message,
                                              "path": str(item.path)})
            errors += 1
            continue
        converted += 1
    return ConvertResult(converted, existing, errors, round(time.monotonic() - start, 3))


@click.command()
@click.argument("input_path", metavar="INPUT", type=click.Path(exists=True, path_type=Path))
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--kind", default=None,
              help="Source kind (default: guessed): lerobot, mcap, dashcam, manipulation, video, "
                   "image_folders, episodes.")
@click.option("--labels", "labels_path", default=None, type=click.Path(dir_okay=False),
              help="Labels CSV: episode_id[,outcome][,failure_time_s][,failure_frame].")
@click.option("--config", "config", type=click.Path(dir_okay=False), default=None,
              help="Pipeline YAML whose `source` section is used (the rest is ignored).")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Override a config value, e.g. --set source.success_column=next.success "
                   "or --set source.image_topic=/camera/image_raw (repeatable).")
@click.option("--overwrite", is_flag=True, help="Rewrite episodes already in OUT.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def convert(input_path, out, kind, labels_path, config, sets, overwrite, quiet):
    """Convert robot logs in INPUT to the episode format in OUT.

    INPUT is anything `failtax discover` reads (docs/INPUTS.md): a LeRobot v2.1/v3
    dataset folder, ROS 2 bags (*.mcap or rosbag2 folders), a folder of dashcam
    videos, a folder of manipulation runs (images + task.txt + plan.txt), image
    folders or videos. Each failure episode becomes OUT/<episode_id>/ (meta.json,
    frames/, steps.jsonl when the log has odometry; docs/EPISODE_FORMAT.md); inputs
    that cannot be read are listed in OUT/convert_errors.jsonl. Run it again to
    resume: episodes already in OUT are skipped.

    Examples:

    \b
        failtax convert lerobot_ds/ episodes/ --set source.success_column=next.success
        failtax convert bags/ episodes/ --set source.failure_topic=/bumper
        failtax convert clips/ episodes/ --kind dashcam --labels crashes.csv
    """
    from failtax.config import load_config
    from failtax.sources import make_source

    overrides = parse_sets(sets)
    if kind:
        overrides["source.kind"] = kind
    if labels_path:
        overrides["source.labels_path"] = labels_path
    try:
        cfg = load_config(config, overrides)
        source = make_source(cfg.source, input_path)
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    if source.kind == "explanations":
        raise click.UsageError("a CSV/JSONL of explanations has no frames to convert")
    result = convert_source(source, out, overwrite=overwrite, progress=not quiet,
                            max_episodes=cfg.source.max_episodes)
    click.echo(json.dumps(result.to_dict(), indent=2, sort_keys=True))
    if result.errors:
        click.echo(f"{result.errors} input(s) skipped: see {out / ERRORS_FILE}", err=True)
