"""`failtax convert`: generated logs → the episode format, read back by the episode reader."""

from __future__ import annotations

import json

import numpy as np
from click.testing import CliRunner
from log_fixtures import CAMERA, draw, write_bag, write_lerobot, write_manipulation_run
from readers_util import discover

from common import read_jsonl
from common.episode import read_meta, read_steps
from failtax.cli import main
from failtax.config import SourceConfig
from failtax.sources import Episode, make_source


def convert(*args):
    result = CliRunner().invoke(main, ["convert", *map(str, args), "--quiet"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout[: result.stdout.rindex("}") + 1])


def test_lerobot_converts_resumes_and_reads_back(tmp_path):
    episodes = [(20, "pick up the cube", False), (10, "pick up the cube", True),
                (16, "open the drawer", False), (14, "open the drawer", False)]
    root = write_lerobot(tmp_path / "ds", episodes, episodes_per_file=2)
    video = root / f"videos/{CAMERA}/chunk-000/file-001.mp4"
    video.write_bytes(video.read_bytes()[: int(video.stat().st_size * 0.8)])  # ep 3 cut off
    out = tmp_path / "episodes"
    result = convert(root, out, "--set", "source.success_column=next.success")
    assert (result["converted"], result["existing"], result["errors"]) == (2, 0, 2)
    errors = {r["episode_id"]: r["kind"] for r in read_jsonl(out / "convert_errors.jsonl")}
    assert errors == {"episode_000001": "skipped_outcome", "episode_000003": "unreadable_frame"}
    meta = read_meta(out / "episode_000002")
    assert meta.outcome == "failure" and meta.task == "open the drawer"
    assert meta.domain == "manipulation" and meta.source == "lerobot v3.0"
    assert meta.num_steps == 0 and meta.failure_step == 7 and meta.camera.fov_deg is None
    assert read_steps(out / "episode_000002") == []  # frames only: no poses in the log
    [ep2] = [e for e in make_source(SourceConfig(path=str(out))).scan()
             if isinstance(e, Episode) and e.episode_id == "episode_000002"]
    assert ep2.num_frames == 8 and ep2.failure_index == 7 and ep2.domain == "manipulation"
    assert np.abs(ep2.load_frame(7).astype(int) - draw(2, 14, 16)).mean() < 6  # frame at 1.4 s
    again = convert(root, out, "--set", "source.success_column=next.success")
    assert (again["converted"], again["existing"]) == (0, 2)


def test_bag_converts_with_odometry_steps_and_discovers(tmp_path):
    for i, bump in enumerate((10, 15)):
        write_bag(tmp_path / "bags" / f"run_{i}.mcap", 24, bump_at=bump, seed=i)
    out = tmp_path / "episodes"
    result = convert(tmp_path / "bags", out, "--set", "source.failure_topic=/bumper",
                     "--set", "source.video_sample_fps_hz=0")
    assert result["converted"] == 2
    meta = read_meta(out / "run_0")
    assert meta.failure_step == 10 and meta.image_topic == "/camera/image"
    steps = read_steps(out / "run_0")
    assert len(steps) == meta.num_steps == 21 and steps[5].frame == "frames/000005.png"
    assert steps[5].v_mps == 0.5 and steps[12].v_mps == 0.0
    run = discover(out, tmp_path / "run")
    assert len(run["explanations"]) == 2
    assert all("drove" in e["trajectory"] for e in run["explanations"])  # poses reached facts


def test_manipulation_runs_keep_task_and_plan(tmp_path):
    write_manipulation_run(tmp_path / "runs", "r1", 5, "wipe the table", ["pick(sponge)", "wipe()"])
    out = tmp_path / "episodes"
    assert convert(tmp_path / "runs", out)["converted"] == 1
    meta = read_meta(out / "r1")
    assert meta.plan == ["pick(sponge)", "wipe()"] and meta.task == "wipe the table"
    [ep] = make_source(SourceConfig(path=str(out))).scan()
    assert ep.meta["plan"] == ["pick(sponge)", "wipe()"] and ep.domain == "manipulation"
