"""`failtax sim`: sample images, maps and recorded episodes from the simulator."""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any

import click
import numpy as np

from common import set_option

log = logging.getLogger(__name__)


def _config(config_path: str | None, family: str | None, overrides: dict[str, Any]):
    from sim.config import load_sim_config

    if family:
        overrides = {**overrides, "world.family": family}
    try:
        return load_sim_config(config_path, overrides)
    except ValueError as e:
        raise click.ClickException(str(e)) from None


def _png_bytes(img) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


_config_options = [
    click.option("--config", "config_path", default=None, metavar="PRESET|YAML",
                 help="Sim config: a configs/sim/ preset name or a YAML file "
                      "(default: built-in defaults)."),
    click.option("--family", type=click.Choice(["office_a", "office_b"]), default=None,
                 help="Building family (overrides the config)."),
    set_option("Dotted config override, repeatable, e.g. --set camera.width_px=96."),
]


def _with_config(fn):
    for opt in reversed(_config_options):
        fn = opt(fn)
    return fn


@click.group()
def sim() -> None:
    """Bundled indoor-navigation simulator (env id failtax/IndoorNav-v1)."""


@sim.command()
@click.option("--out", "out_dir", type=click.Path(file_okay=False), required=True,
              help="Folder for the images.")
@click.option("--building-seed", type=int, default=1, show_default=True)
@click.option("--size", "size_px", type=int, default=None,
              help="Render size in pixels (default: the config's camera size).")
@_with_config
def samples(out_dir: str, building_seed: int, size_px: int | None, config_path: str | None,
            family: str | None, overrides: dict[str, Any]) -> None:
    """One camera image per hazard class, a labelled sheet and a top-down map."""
    from common import atomic_write_bytes
    from sim.env import load_world
    from sim.samples import contact_sheet, hazard_views
    from sim.topdown import Region, render_topdown

    cfg = _config(config_path, family, overrides)
    world = load_world(cfg, cfg.world.family, building_seed)
    views = hazard_views(world, cfg, seed=building_seed, size_px=size_px)
    out = Path(out_dir)
    from PIL import Image

    for v in views:
        atomic_write_bytes(out / f"{world.building.building_id}_{v.hazard}.png",
                           _png_bytes(Image.fromarray(v.rgb)))
        click.echo(f"{v.hazard:13s} objects {list(v.object_ids)} pose "
                   f"({v.pose[0]:.2f}, {v.pose[1]:.2f}, {v.pose[2]:.2f}) "
                   f"target pixels {v.visible_fraction:.0%}")
    atomic_write_bytes(out / f"{world.building.building_id}_hazards.png",
                       _png_bytes(contact_sheet(views)))
    # Camera poses as short arrows on the map, labelled with the hazard.
    arrows = [np.array([[v.pose[0], v.pose[1]],
                        [v.pose[0] + 0.8 * np.cos(v.pose[2]), v.pose[1] + 0.8 * np.sin(v.pose[2])]])
              for v in views]
    regions = [Region.circle(v.pose[:2], 0.25, v.hazard) for v in views]
    img = render_topdown(world.building, trajectories=arrows, regions=regions,
                         highlight_object_ids=[i for v in views for i in v.object_ids],
                         title=world.building.building_id)
    atomic_write_bytes(out / f"{world.building.building_id}_map.png", _png_bytes(img))
    click.echo(f"wrote {len(views) + 2} images to {out}")


@sim.command("map")
@click.option("--out", "out_path", type=click.Path(dir_okay=False), required=True,
              help="PNG file to write.")
@click.option("--building-seed", type=int, default=0, show_default=True)
@click.option("--px-per-m", type=float, default=20.0, show_default=True)
@_with_config
def map_cmd(out_path: str, building_seed: int, px_per_m: float, config_path: str | None,
            family: str | None, overrides: dict[str, Any]) -> None:
    """Top-down map of one building, obstacles coloured by class."""
    from sim.env import load_world
    from sim.topdown import render_topdown, save_png

    cfg = _config(config_path, family, overrides)
    world = load_world(cfg, cfg.world.family, building_seed)
    save_png(render_topdown(world.building, px_per_m=px_per_m, title=world.building.building_id),
             out_path)
    click.echo(f"wrote {out_path}")


@sim.command()
@click.option("--out", "out_dir", type=click.Path(file_okay=False), required=True,
              help="Episodes folder (created; finished episodes are kept and skipped).")
@click.option("-n", "--episodes", "num_episodes", type=int, default=10, show_default=True)
@click.option("--policy", "policies", multiple=True,
              type=click.Choice(["goal_seeker", "path_follower", "blind_follower", "random"]),
              default=("blind_follower", "path_follower"), show_default=True,
              help="Scripted policies, repeatable; episodes cycle through them.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Episode i uses reset seed SEED + i.")
@click.option("--frame-stride", type=int, default=1, show_default=True)
@click.option("--channels/--no-channels", default=True, show_default=True,
              help="Store depth/semantic/instance arrays.")
@click.option("--map/--no-map", "draw_map", default=True, show_default=True,
              help="Also write maps/<building>.png with all trajectories and collisions.")
@click.option("--workers", type=int, default=1, show_default=True,
              help="Processes recording episodes in parallel.")
@_with_config
def rollout(out_dir: str, num_episodes: int, policies: tuple[str, ...], seed: int,
            frame_stride: int, channels: bool, draw_map: bool, workers: int,
            config_path: str | None, family: str | None, overrides: dict[str, Any]) -> None:
    """Record episodes with scripted policies in the failtax episode format."""
    from sim.env import load_world
    from sim.rollout import record_scripted_episodes
    from sim.topdown import render_topdown, save_png

    cfg = _config(config_path, family, overrides)
    out = Path(out_dir)
    summary = record_scripted_episodes(cfg, out, num_episodes, policies=policies, seed=seed,
                                       frame_stride=frame_stride, channels=channels,
                                       workers=workers)
    if draw_map:
        by_building: dict[str, list] = {}
        for ep in summary.episodes:
            by_building.setdefault(ep.building_id, []).append(ep)
        for building_id, eps in by_building.items():
            fam, bseed = building_id.rsplit("-", 1)
            world = load_world(cfg, fam, int(bseed))
            img = render_topdown(world.building, trajectories=[e.trajectory_xy for e in eps],
                                 collisions=[e.contact_xy for e in eps if e.contact_xy],
                                 title=building_id)
            save_png(img, out / "maps" / f"{building_id}.png")
    for (name, outcome, cause), count in sorted(summary.outcomes.items(), key=str):
        click.echo(f"{name:15s} {outcome:10s} {cause or '':13s} {count}")
    click.echo(f"wrote {len(summary.episodes)} episodes to {out} "
               f"({summary.skipped} already there)")
