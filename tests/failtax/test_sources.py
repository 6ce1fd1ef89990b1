"""Episode sources: the four input kinds and how bad input is reported."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from failtax.config import SourceConfig
from failtax.sources import Episode, EpisodeReadError, SourceError, detect_kind, make_source


def scan(path: Path, **kw) -> tuple[list, list[SourceError]]:
    items = list(make_source(SourceConfig(path=str(path), **kw)).scan())
    return [i for i in items if not isinstance(i, SourceError)], [
        i for i in items if isinstance(i, SourceError)
    ]


def test_episode_format_reads_frames_steps_and_failure(tmp_path, episode_factory):
    episode_factory(tmp_path, "ep-a", hazard="pole", n_steps=9)
    [ep], errors = scan(tmp_path)
    assert errors == []
    assert isinstance(ep, Episode) and ep.kind == "episodes"
    assert ep.num_frames == 9 and ep.failure_index == 8
    assert ep.load_frame(3).shape == (32, 32, 3)
    assert set(ep.load_channels(3)) == {"depth", "semantic", "instance"}
    assert ep.step_record(4)["step"] == 4
    assert ep.frame_png(0).startswith(b"\x89PNG")


def test_bad_episodes_are_reported_and_skipped(tmp_path, episode_factory):
    episode_factory(tmp_path, "good", n_steps=5)
    no_meta = episode_factory(tmp_path, "no-meta", n_steps=5)
    (no_meta / "meta.json").unlink()
    bad_meta = episode_factory(tmp_path, "bad-meta", n_steps=5)
    (bad_meta / "meta.json").write_text("{not json")
    zero = episode_factory(tmp_path, "zero-steps", n_steps=5)
    (zero / "steps.jsonl").write_text("")
    no_frames = episode_factory(tmp_path, "no-frames", n_steps=5)
    for f in (no_frames / "frames").iterdir():
        f.unlink()
    episode_factory(tmp_path, "half", n_steps=5).rename(tmp_path / "half.tmp")  # mid-write
    episode_factory(tmp_path, "won", n_steps=5, outcome="success")

    episodes, errors = scan(tmp_path)
    assert [e.episode_id for e in episodes] == ["good"]
    kinds = {e.episode_id: e.kind for e in errors}
    assert kinds == {
        "bad-meta": "bad_meta",
        "half": "incomplete",
        "no-frames": "no_frames",
        "no-meta": "missing_meta",
        "won": "skipped_outcome",
        "zero-steps": "zero_steps",
    }
    assert all(e.to_record()["message"] for e in errors)


def test_corrupt_frame_raises_typed_error(tmp_path, episode_factory):
    folder = episode_factory(tmp_path, "ep", n_steps=4)
    (folder / "frames" / "000002.png").write_bytes(b"not a png")
    (folder / "channels" / "000001.npz").write_bytes(b"garbage")
    [ep], _ = scan(tmp_path)
    with pytest.raises(EpisodeReadError) as err:
        ep.load_frame(2)
    assert err.value.kind == "unreadable_frame"
    with pytest.raises(EpisodeReadError) as err:
        ep.load_channels(1)
    assert err.value.kind == "unreadable_channels"


def test_image_folders_put_failure_at_last_image(tmp_path):
    for name, n in (("traj-1", 4), ("traj-2", 2)):
        (tmp_path / name).mkdir()
        for i in range(n):
            Image.fromarray(np.full((8, 8, 3), i * 40, np.uint8)).save(
                tmp_path / name / f"{i:03d}.jpg"
            )
    (tmp_path / "empty").mkdir()
    episodes, errors = scan(tmp_path)
    assert detect_kind(tmp_path) == "image_folders"
    assert [(e.episode_id, e.num_frames, e.failure_index) for e in episodes] == [
        ("traj-1", 4, 3),
        ("traj-2", 2, 1),
    ]
    assert [(e.episode_id, e.kind) for e in errors] == [("empty", "no_frames")]
    assert episodes[0].load_frame(3)[0, 0, 0] > 100


def test_video_files_decode_and_corrupt_ones_are_reported(tmp_path):
    import av

    path = tmp_path / "run-7.mp4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for i in range(20):
            frame = av.VideoFrame.from_ndarray(
                np.full((32, 32, 3), i * 12, np.uint8), format="rgb24"
            )
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    (tmp_path / "broken.mp4").write_bytes(b"\x00" * 100)
    episodes, errors = scan(tmp_path, video_sample_fps_hz=5.0)
    assert detect_kind(tmp_path) == "video"
    [ep] = episodes
    assert ep.episode_id == "run-7" and 9 <= ep.num_frames <= 11  # 2 s at 5 fps
    assert ep.failure_index == ep.num_frames - 1
    assert ep.load_frame(ep.failure_index).mean() > ep.load_frame(0).mean()
    assert [(e.episode_id, e.kind) for e in errors] == [("broken", "unreadable_video")]


def test_given_explanations_csv_and_jsonl(tmp_path):
    csv_path = tmp_path / "x.csv"
    csv_path.write_text(
        "episode_id,failure_reason,trajectory\ne1,hit a glass door,drove ahead\ne2,,\n"
    )
    items = list(make_source(SourceConfig(path=str(csv_path))).scan())
    assert (
        items[0].episode_id == "e1"
        and items[0].input_mode == "given"
        and items[0].trajectory == "drove ahead"
    )
    assert isinstance(items[1], SourceError) and items[1].kind == "bad_row"

    jl = tmp_path / "x.jsonl"
    jl.write_text(json.dumps({"episode_id": "e3", "failure_reason": "pole"}) + "\n[1]\n")
    items = list(make_source(SourceConfig(path=str(jl))).scan())
    assert items[0].failure_reason == "pole" and items[0].trajectory == ""
    assert isinstance(items[1], SourceError)


def test_given_explanations_carry_the_writer_column_the_user_names(tmp_path):
    csv_path = tmp_path / "x.csv"
    csv_path.write_text("episode_id,failure_reason,fleet\ne1,hit a glass door,Northwind\ne2,hit a pole,\n")
    items = list(make_source(SourceConfig(path=str(csv_path), writer_column="fleet")).scan())
    assert [e.writer for e in items] == ["Northwind", None]
    assert [e.writer for e in make_source(SourceConfig(path=str(csv_path))).scan()] == [None, None]
    jl = tmp_path / "x.jsonl"
    jl.write_text(json.dumps({"episode_id": "e3", "failure_reason": "pole", "site": "B7"}) + "\n")
    [item] = make_source(SourceConfig(path=str(jl), writer_column="site")).scan()
    assert item.writer == "B7" and item.to_dict()["writer"] == "B7"
    with pytest.raises(ValueError, match="no row has the writer column 'operator'.*fleet"):
        list(make_source(SourceConfig(path=str(csv_path), writer_column="operator")).scan())


def test_unknown_kind_and_missing_path_are_clear(tmp_path):
    with pytest.raises(ValueError, match="valid: auto, episodes"):
        make_source(SourceConfig(kind="rosbag", path=str(tmp_path)))
    with pytest.raises(ValueError, match="does not exist"):
        make_source(SourceConfig(path=str(tmp_path / "nope")))


def test_a_single_episode_folder_is_one_episode(tmp_path, episode_factory):
    folder = episode_factory(tmp_path, "only", n_steps=4)
    [ep], errors = scan(folder)
    assert ep.episode_id == "only" and errors == []


@pytest.mark.parametrize("content", [[], ["notes.txt", "run.log"], ["data.bin", "sub/"]])
def test_folder_of_no_supported_input_is_an_early_clear_error(tmp_path, content):
    # Such a folder used to be taken for image folders and fail much later with
    # "holds no explanations".
    for name in content:
        if name.endswith("/"):
            (tmp_path / name).mkdir()
        else:
            (tmp_path / name).write_text("x")
    with pytest.raises(ValueError, match="cannot tell the source kind") as err:
        make_source(SourceConfig(path=str(tmp_path)))
    message = str(err.value)
    if not content:
        assert "the folder is empty" in message
    for name in content:  # what was found is named: the files' suffixes, the folders
        found = "1 folder(s)" if name.endswith("/") else "." + name.rsplit(".", 1)[-1]
        assert found in message
    for supported in ("meta.json", "video", "image", "CSV/JSONL", "source.kind"):
        assert supported in message
    with pytest.raises(ValueError, match="cannot tell the source kind"):
        detect_kind(tmp_path)


def test_images_directly_in_the_folder_say_what_an_image_source_wants(tmp_path):
    for i in range(3):
        Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / f"{i}.png")
    with pytest.raises(ValueError, match="3 images directly in the folder"):
        detect_kind(tmp_path)


def _point_frame_at(folder: Path, step: int, frame: str) -> None:
    """Rewrite one step's `frame` in steps.jsonl (a hostile or broken converter)."""
    lines = (folder / "steps.jsonl").read_text().splitlines()
    rec = json.loads(lines[step])
    rec["frame"] = frame
    lines[step] = json.dumps(rec)
    (folder / "steps.jsonl").write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("how", ["dotdot", "absolute", "symlink", "symlinked_frames_dir"])
def test_frame_paths_outside_the_episode_are_rejected(tmp_path, episode_factory, how):
    # A private image elsewhere on the machine, which must never be read (and so
    # never be sent to a model or shown in a report).
    secret = tmp_path / "private" / "secret.png"
    secret.parent.mkdir()
    Image.fromarray(np.full((32, 32, 3), 255, np.uint8)).save(secret)
    root = tmp_path / "episodes"
    root.mkdir()
    folder = episode_factory(root, "ep-evil", n_steps=4)
    episode_factory(root, "ep-fine", n_steps=4)
    if how == "dotdot":
        _point_frame_at(folder, 1, "../../private/secret.png")
    elif how == "absolute":
        _point_frame_at(folder, 1, str(secret))
    elif how == "symlink":
        (folder / "frames" / "000001.png").unlink()
        (folder / "frames" / "000001.png").symlink_to(secret)
    else:  # the whole frames folder is a link out of the episode
        for f in (folder / "frames").iterdir():
            f.unlink()
        (folder / "frames").rmdir()
        (folder / "frames").symlink_to(secret.parent, target_is_directory=True)
        for k in range(4):
            _point_frame_at(folder, k, "frames/secret.png")
    episodes, errors = scan(root)
    assert [e.episode_id for e in episodes] == ["ep-fine"]
    [err] = errors
    assert (err.episode_id, err.kind) == ("ep-evil", "unsafe_path")
    assert "outside the episode folder" in err.message or "climbs out" in err.message
    assert all(secret.resolve() != p.resolve() for e in episodes for p in e.frame_paths)
