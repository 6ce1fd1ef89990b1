"""A batched numpy 2.5-D raycaster (no GPU, no display).

One ray per image column finds the nearest `max_hits_per_column` surfaces
(segments and circles); every pixel row then composites those surfaces front
to back where the row's line of sight at that distance lies inside the
surface's height range. Hence:

* low boxes fill only the bottom rows and, with a pitched camera, leave the
  view when the robot is close;
* glass is composited at its opacity (~12 %): RGB shows what is behind with
  a faint tint and a thin frame; semantic/instance channels report it, and so
  does depth with the `ideal` depth sensor, while the `realistic` one
  (`DepthSensorConfig`) sees through the pane and returns only from its frame;
* thin poles use coverage-based anti-aliasing: a pole narrower than a pixel
  blends in at its covered fraction instead of vanishing between rays; the
  realistic depth sensor loses thin objects beyond `thin_max_range_m`;
* plain walls are one flat colour close to the floor's tone, with no
  orientation shading or texture; ordinary walls have panels or bricks.

Pitch is modelled the usual 2.5-D way (rows shear with the pitch: exact at
pitch 0, a small distortion of vertical lines otherwise).

Example:
    >>> r = Raycaster(compile_building(b), b, CameraConfig())
    >>> out = r.render(np.array([[2.0, 3.0, 0.0]]))   # poses (B, 3): x, y, yaw
    >>> out.rgb.shape
    (1, 64, 64, 3)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from sim.building import CLASS_IDS, Building
from sim.config import CameraConfig, DepthSensorConfig
from sim.geometry import TEXTURE_IDS, CompiledGeometry

_LIGHT = np.array([0.6, 0.8], dtype=np.float32)
_FOG_RGB = np.array([0.62, 0.62, 0.64], dtype=np.float32)
_T_FLAT, _T_PANELS, _T_BRICK, _T_WOOD, _T_GLASS, _T_FABRIC, _T_METAL = (
    TEXTURE_IDS[n] for n in ("flat", "panels", "brick", "wood", "glass", "fabric", "metal"))
_PLAIN = CLASS_IDS["plain_wall"]
_CHUNK_ELEMENTS = 48_000  # robots * W * K * H per numpy pass


@dataclass
class RenderOutput:
    """Rendered views of B robots.

    Attributes:
        rgb: (B, H, W, 3) uint8.
        depth: (B, H, W) float32 forward distance (m), inf beyond max range, or None.
        semantic: (B, H, W) uint8 class id (sim.building.SEMANTIC_CLASSES), or None.
        instance: (B, H, W) uint16 object id (0 = none), or None.
    """

    rgb: np.ndarray
    depth: np.ndarray | None = None
    semantic: np.ndarray | None = None
    instance: np.ndarray | None = None


class Raycaster:
    """Renders front views of any number of robots in one building.

    Args:
        geom: compiled primitives of the building.
        building: the building (floor/ceiling colours and height).
        camera: camera settings.
        depth_sensor: what the depth channel reports; None = ideal (every surface).
    """

    def __init__(self, geom: CompiledGeometry, building: Building, camera: CameraConfig,
                 depth_sensor: DepthSensorConfig | None = None) -> None:
        self.geom = geom
        self.cam = camera
        self.depth_sensor = depth_sensor or DepthSensorConfig(mode="ideal")
        w, h = camera.width_px, camera.height_px
        self.focal_px = (w / 2) / math.tan(math.radians(camera.fov_deg) / 2)
        # Lateral offset per column (left positive) and line-of-sight slope per row.
        self.x_col = ((w / 2 - np.arange(w) - 0.5) / self.focal_px).astype(np.float32)
        y_row = (h / 2 - np.arange(h) - 0.5) / self.focal_px
        self.slope_row = np.tan(math.radians(camera.pitch_deg) + np.arctan(y_row)).astype(np.float32)
        ch = building.ceiling_height_m
        self.ceiling_m = np.float32(ch)
        with np.errstate(divide="ignore"):
            d_floor = np.where(self.slope_row < 0, camera.height_m / -self.slope_row, np.inf)
            d_ceil = np.where(self.slope_row > 0, (ch - camera.height_m) / self.slope_row, np.inf)
        self.d_bg_row = np.minimum(d_floor, d_ceil).astype(np.float32)  # (H,)
        self.is_floor_row = self.slope_row < 0
        finite = np.isfinite(self.d_bg_row) & (self.d_bg_row < camera.max_range_m)
        self._bg_d = np.where(finite, self.d_bg_row, 0).astype(np.float32)
        self._bg_depth = np.where(finite, self.d_bg_row, np.inf).astype(np.float32)
        floor_idx = np.flatnonzero(finite & self.is_floor_row)
        self._floor_rows = slice(int(floor_idx.min()), int(floor_idx.max()) + 1) \
            if len(floor_idx) else slice(0, 0)
        # Background colour = shade * scale + offset, with per-row fog folded in.
        bg_fog = (np.clip(self._bg_d / camera.max_range_m, 0, 1) ** 2 * 0.6)[:, None]
        row_rgb = np.where(self.is_floor_row[:, None], np.asarray(building.floor_rgb),
                           np.asarray(building.ceiling_rgb))
        self._bg_scale = np.where(finite[:, None], row_rgb * (1 - bg_fog), 0).astype(np.float32)
        self._bg_offset = np.where(finite[:, None], _FOG_RGB * bg_fog,
                                   _FOG_RGB).astype(np.float32)
        self.floor_concrete = building.floor_texture == "concrete"
        g = geom
        self.seg_len = np.hypot(*(g.seg_b - g.seg_a).T).astype(np.float32)
        seg_dir = (g.seg_b - g.seg_a) / np.maximum(self.seg_len, 1e-9)[:, None]
        seg_normal = np.stack([-seg_dir[:, 1], seg_dir[:, 0]], axis=1)
        seg_sem = g.obj_sem[g.seg_obj] if len(g.seg_obj) else np.zeros(0, np.uint8)
        self.seg_light = np.where(seg_sem == _PLAIN, 1.0,
                                  0.72 + 0.28 * np.abs(seg_normal @ _LIGHT)).astype(np.float32)
        # Full-height opaque walls end a column: nothing behind them can show.
        seg_alpha = g.obj_alpha[g.seg_obj] if len(g.seg_obj) else np.zeros(0, np.float32)
        self.seg_occluder = (g.seg_zmin <= 0.01) & (g.seg_zmax >= ch - 0.01) & (seg_alpha >= 1)
        self.seg_mid = ((g.seg_a + g.seg_b) / 2).astype(np.float32)
        self.seg_half = (self.seg_len / 2).astype(np.float32)

    # ------------------------------------------------------------------ public
    def render(
        self,
        poses: np.ndarray,
        *,
        depth: bool = False,
        semantic: bool = False,
        instance: bool = False,
    ) -> RenderOutput:
        """Render B front views.

        Args:
            poses: (B, 3) x_m, y_m, yaw_rad of each robot (camera at the centre).
            depth / semantic / instance: also return these channels.

        Returns:
            RenderOutput with (B, H, W, ...) arrays.
        """
        poses = np.asarray(poses, dtype=np.float32).reshape(-1, 3)
        cam = self.cam
        # Small chunks keep the (robots, W, K, H) working arrays in cache; on
        # this kind of CPU larger numpy batches were measured slower, not faster.
        chunk = max(1, _CHUNK_ELEMENTS // (cam.width_px * cam.height_px * cam.max_hits_per_column))
        if len(poses) > chunk:
            parts = [self._render_chunk(poses[i: i + chunk], depth, semantic, instance)
                     for i in range(0, len(poses), chunk)]
            cat = lambda name: (np.concatenate([getattr(p, name) for p in parts])
                                if getattr(parts[0], name) is not None else None)
            return RenderOutput(cat("rgb"), cat("depth"), cat("semantic"), cat("instance"))
        return self._render_chunk(poses, depth, semantic, instance)

    def _render_chunk(self, poses: np.ndarray, depth: bool, semantic: bool,
                      instance: bool) -> RenderOutput:
        bsz = len(poses)
        cam, g = self.cam, self.geom
        W, H = cam.width_px, cam.height_px
        origin = poses[:, :2]
        fwd = np.stack([np.cos(poses[:, 2]), np.sin(poses[:, 2])], axis=1)
        left = np.stack([-fwd[:, 1], fwd[:, 0]], axis=1)
        rays = fwd[:, None, :] + self.x_col[None, :, None] * left[:, None, :]  # (B, W, 2)

        hits = self._nearest_hits(origin, fwd, rays)
        t, obj, u, alpha, light, seglen, zmin, zmax, width = hits
        K = t.shape[2]
        valid = np.isfinite(t)
        tex = g.obj_tex[obj] if len(g.obj_tex) else np.zeros_like(obj)
        base = g.obj_rgb[obj] if len(g.obj_rgb) else np.zeros((*obj.shape, 3), np.float32)

        # Height of the line of sight at each hit, per row: (B, W, K, H). Missing
        # hits get t = 0 here (never covered: zmin = inf) to keep the maths finite.
        # Surfaces never rise above the ceiling (zmax is clipped to it) and never
        # sink below the floor, so "inside the height range" also means "nearer
        # than the floor/ceiling seen on that row".
        t_fin = np.where(valid, t, np.float32(0))
        z = cam.height_m + t_fin[..., None] * self.slope_row
        cover = (z >= zmin[..., None]) & (z <= zmax[..., None])
        shade, a_pix = self._texture(tex, u, z, seglen, alpha)
        fog = np.clip(t_fin / cam.max_range_m, 0, 1) ** 2 * np.float32(0.6)  # (B, W, K)

        # Front-to-back compositing as weights: w_k = a_k * prod_{j<k} (1 - a_j).
        a = a_pix * cover
        weight = np.empty_like(a)
        trans = np.ones((bsz, W, H), np.float32)
        for k in range(K):
            weight[:, :, k] = trans * a[:, :, k]
            trans = trans * (1 - a[:, :, k])
        # Per-hit colour with distance fog; texture shading modulates it per pixel.
        hit_rgb = base * (light * (1 - fog))[..., None] + fog[..., None] * _FOG_RGB
        rgb = np.matmul((weight * shade).transpose(0, 1, 3, 2), hit_rgb)  # (B, W, H, 3)
        bg, bg_depth = self._background(origin, fwd, left)
        rgb += trans[..., None] * bg
        out = RenderOutput(
            rgb=(np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8).transpose(0, 2, 1, 3)
        )
        if depth or semantic or instance:
            # Labels: the first surface a pixel's ray meets (glass counts; a thin
            # pole counts where it covers at least half the pixel).
            solid = cover & ((alpha >= 0.5) | (g.obj_alpha[obj] < 1) if len(g.obj_alpha)
                             else alpha >= 0.5)[..., None]
            has = solid.any(axis=2)
            kk = np.argmax(solid, axis=2)  # (B, W, H)
            if depth:
                out.depth = self._depth(solid, has, kk, t_fin, a_pix, cover, width,
                                        bg_depth).transpose(0, 2, 1)
            o_lab = np.take_along_axis(obj, kk, axis=2) if K else np.zeros_like(kk)
            if semantic:
                bg_sem = np.where(np.isfinite(bg_depth), np.where(self.is_floor_row, 1, 2), 0)
                sem = np.where(has, g.obj_sem[o_lab] if len(g.obj_sem) else 0, bg_sem)
                out.semantic = sem.astype(np.uint8).transpose(0, 2, 1)
            if instance:
                ins = np.where(has, g.obj_id[o_lab] if len(g.obj_id) else 0, 0)
                out.instance = ins.astype(np.uint16).transpose(0, 2, 1)
        return out

    # ------------------------------------------------------------------ internals
    def _depth(self, solid, has, kk, t_fin, a_pix, cover, width, bg_depth) -> np.ndarray:
        """(B, W, H) depth: the labelled surface (ideal) or the first one that returns."""
        ds = self.depth_sensor
        if ds.mode == "realistic" and t_fin.shape[2]:
            thin_far = (width < ds.thin_width_m) & (t_fin > ds.thin_max_range_m)
            ret = cover & (a_pix >= ds.min_return_opacity) & ~thin_far[..., None]
            has, kk = ret.any(axis=2), np.argmax(ret, axis=2)
        if not t_fin.shape[2]:
            return np.asarray(bg_depth, np.float32)
        t_lab = np.take_along_axis(t_fin, kk, axis=2)
        return np.where(has, t_lab, bg_depth).astype(np.float32)

    def _nearest_hits(self, origin: np.ndarray, fwd: np.ndarray, rays: np.ndarray):
        """The surfaces each column composites, nearest first, each (B, W, K).

        The nearest full-height opaque wall ends every column (nothing behind
        it can show); in front of it the `max_hits_per_column - 1` nearest
        partial surfaces (glass, furniture, poles, low objects) are kept.

        Returns:
            (t, obj, u, alpha, light, seglen, zmin, zmax, width); t = inf where
            no hit (then obj = 0, zmin = inf, zmax = -inf); width is the segment's
            length or the circle's diameter (m).
        """
        g, cam = self.geom, self.cam
        bsz, W = rays.shape[:2]
        rng = cam.max_range_m
        f32 = np.float32
        # --- segments, culled per robot to those within range and not behind.
        rel_mid = self.seg_mid[None] - origin[:, None, :]  # (B, N, 2)
        dist_mid = np.hypot(rel_mid[..., 0], rel_mid[..., 1])
        seg_idx, seg_ok = _pad_indices((dist_mid - self.seg_half[None] < rng) &
                                       self._in_view(g.seg_a, g.seg_b, origin, fwd, 0.0))
        a = g.seg_a[seg_idx]
        e = g.seg_b[seg_idx] - a
        ao = a - origin[:, None, :]  # (B, Ns, 2)
        rx, ry = rays[..., 0][:, :, None], rays[..., 1][:, :, None]  # (B, W, 1)
        ex, ey = e[..., 0][:, None, :], e[..., 1][:, None, :]
        aox, aoy = ao[..., 0][:, None, :], ao[..., 1][:, None, :]
        denom = rx * ey - ry * ex
        with np.errstate(divide="ignore", invalid="ignore"):
            inv = 1.0 / denom
            t_seg = (aox * ey - aoy * ex) * inv
            s_seg = (aox * ry - aoy * rx) * inv
        ok = (t_seg > 1e-3) & (s_seg >= 0) & (s_seg <= 1) & seg_ok[:, None, :]
        t_seg = np.where(ok, t_seg, np.inf).astype(f32)
        occl = self.seg_occluder[seg_idx][:, None, :]  # (B, 1, Ns)
        t_occ_all = np.where(occl, t_seg, np.inf)
        occ_slot = np.argmin(t_occ_all, axis=2)  # (B, W)
        t_occ = np.take_along_axis(t_occ_all, occ_slot[..., None], axis=2)[..., 0]
        t_part = np.where(occl, np.inf, t_seg)
        # --- circles with coverage anti-aliasing.
        rel_c = g.circ_c[None] - origin[:, None, :]
        dist_c = np.hypot(rel_c[..., 0], rel_c[..., 1])
        c_idx, c_ok = _pad_indices((dist_c < rng) &
                                   self._in_view(g.circ_c, g.circ_c, origin, fwd, g.circ_r))
        n_seg = t_seg.shape[2]
        if c_idx.shape[1]:
            w = g.circ_c[c_idx] - origin[:, None, :]  # (B, M, 2)
            wx, wy = w[..., 0][:, None, :], w[..., 1][:, None, :]
            rr = rx * rx + ry * ry  # (B, W, 1)
            rnorm = np.sqrt(rr)
            t_c = (wx * rx + wy * ry) / rr  # forward distance of closest approach
            perp = (wx * ry - wy * rx) / rnorm  # signed perpendicular distance
            rad = g.circ_r[c_idx][:, None, :]
            px_m = np.maximum(t_c, 1e-3) / (self.focal_px * rnorm)  # pixel footprint (m)
            cov = np.minimum(np.clip((rad + px_m / 2 - np.abs(perp)) / px_m, 0, 1),
                             2 * rad / px_m)
            t_hit = np.where(np.abs(perp) < rad,
                             t_c - np.sqrt(np.maximum(rad**2 - perp**2, 0)) / rnorm, t_c)
            t_cir = np.where((cov > 0.02) & (t_hit > 1e-3) & c_ok[:, None, :], t_hit,
                             np.inf).astype(f32)
            t_part = np.concatenate([t_part, t_cir], axis=2)
        t_part = np.where(t_part < t_occ[..., None], t_part, np.inf)
        # --- keep the K-1 nearest partial surfaces.
        kp = min(cam.max_hits_per_column - 1, t_part.shape[2])
        if kp <= 0:
            slot = np.zeros((bsz, W, 0), np.intp)
        elif t_part.shape[2] > kp:
            slot = np.argpartition(t_part, kp - 1, axis=2)[:, :, :kp]
        else:
            slot = np.broadcast_to(np.arange(kp), (bsz, W, kp))
        t_sel = np.take_along_axis(t_part, slot, axis=2)
        order = np.argsort(t_sel, axis=2)
        slot = np.take_along_axis(slot, order, axis=2)
        t_sel = np.take_along_axis(t_sel, order, axis=2)
        is_seg = slot < n_seg
        seg_slot = np.where(is_seg, slot, 0)
        # Append the occluder as the last layer.
        t = np.concatenate([t_sel, t_occ[..., None]], axis=2)
        is_seg = np.concatenate([is_seg, np.ones((bsz, W, 1), bool)], axis=2)
        seg_slot = np.concatenate([seg_slot, occ_slot[..., None]], axis=2)
        valid = np.isfinite(t)
        b_ix = np.arange(bsz)[:, None, None]
        seg_prim = seg_idx[b_ix, seg_slot] if n_seg else np.zeros_like(seg_slot)
        s_hit = np.take_along_axis(np.where(ok, s_seg, 0).astype(f32), seg_slot, axis=2) \
            if n_seg else np.zeros(t.shape, f32)
        obj = np.where(is_seg, g.seg_obj[seg_prim] if n_seg else 0, 0)
        seglen = np.where(is_seg, self.seg_len[seg_prim] if n_seg else 1, f32(1e9))
        u = np.where(is_seg, (g.seg_u0[seg_prim] + s_hit * seglen) if n_seg else 0, 0)
        alpha = np.where(is_seg, g.obj_alpha[obj] if len(g.obj_alpha) else 1, 0)
        light = np.where(is_seg, self.seg_light[seg_prim] if n_seg else 1, 0)
        zmin = np.where(is_seg, g.seg_zmin[seg_prim] if n_seg else 0, 0)
        zmax = np.where(is_seg, g.seg_zmax[seg_prim] if n_seg else 0, 0)
        if c_idx.shape[1]:
            circ_slot = np.where(is_seg, 0, slot_full := np.concatenate(
                [slot, np.zeros((bsz, W, 1), np.intp)], axis=2) - n_seg)
            del slot_full
            circ_prim = c_idx[b_ix, circ_slot]
            c_obj = g.circ_obj[circ_prim]
            c_cov = np.take_along_axis(cov, circ_slot, axis=2)
            side = np.clip(np.take_along_axis(perp, circ_slot, axis=2) /
                           np.maximum(g.circ_r[circ_prim], 1e-6), -1, 1)
            obj = np.where(is_seg, obj, c_obj)
            alpha = np.where(is_seg, alpha, g.obj_alpha[c_obj] * c_cov)
            # Cylinder shading: brightest where the surface faces the camera.
            light = np.where(is_seg, light, 0.65 + 0.35 * (1 - side**2))
            u = np.where(is_seg, u, np.arcsin(side) * g.circ_r[circ_prim])
            zmin = np.where(is_seg, zmin, g.circ_zmin[circ_prim])
            zmax = np.where(is_seg, zmax, g.circ_zmax[circ_prim])
            width = np.where(is_seg, seglen, 2 * g.circ_r[circ_prim])
        else:
            width = seglen
        obj = np.where(valid, obj, 0)
        zmin = np.where(valid, np.maximum(zmin, 0), np.inf).astype(f32)
        zmax = np.where(valid, np.minimum(zmax, self.ceiling_m), -np.inf).astype(f32)
        return (t.astype(f32), obj, u.astype(f32), alpha.astype(f32), light.astype(f32),
                seglen.astype(f32), zmin, zmax, width.astype(f32))

    def _in_view(self, a: np.ndarray, b: np.ndarray, origin: np.ndarray, fwd: np.ndarray,
                 pad: np.ndarray | float) -> np.ndarray:
        """(B, N) False for segments a-b (or discs of radius pad) that cannot
        cross the view wedge: both ends behind, or both beyond one side edge."""
        half = math.radians(self.cam.fov_deg) / 2 + 0.02
        c, s = math.cos(half), math.sin(half)
        out = np.ones((len(origin), len(a)), bool)
        if len(a) == 0:
            return out
        fx, fy = fwd[:, 0:1], fwd[:, 1:2]
        pad = np.asarray(pad, np.float32)
        masks = []
        for p in (a, b):
            rx, ry = p[None, :, 0] - origin[:, 0:1], p[None, :, 1] - origin[:, 1:2]
            f = rx * fx + ry * fy  # forward
            lat = -rx * fy + ry * fx  # left
            # Signed distances beyond the left and right wedge edges and behind.
            masks.append((lat * c - f * s > pad, -lat * c - f * s > pad, f < -pad))
        for k in range(3):
            out &= ~(masks[0][k] & masks[1][k])
        return out

    def _texture(self, tex: np.ndarray, u: np.ndarray, z: np.ndarray, seglen: np.ndarray,
                 alpha: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Brightness multiplier and per-pixel opacity, both (B, W, K, H).

        Each pattern is evaluated only on the hits that carry its texture.
        """
        shape = z.shape
        f32 = np.float32
        shade = np.ones(shape, f32)
        a_pix = np.broadcast_to(alpha[..., None], shape).astype(f32, copy=True)
        for tid in np.unique(tex).tolist():
            if tid == _T_FLAT:
                continue
            m = tex == tid  # (B, W, K)
            zz = z[m]  # (n, H)
            uu = u[m][:, None]
            if tid == _T_PANELS:
                v = np.where(np.mod(uu, f32(1.2)) < 0.05, f32(0.72), f32(1.0)) * \
                    np.where(zz < 0.1, f32(0.55), np.where((zz > 0.9) & (zz < 0.96), f32(0.85),
                                                            f32(1.0)))
            elif tid == _T_BRICK:
                row = np.floor(zz * f32(5.0))
                ub = uu + f32(0.2) * np.mod(row, 2)
                mortar = (np.mod(zz, f32(0.2)) < 0.03) | (np.mod(ub, f32(0.4)) < 0.035)
                brick = row * f32(131.0) + np.floor(ub * f32(2.5)) * f32(17.0)
                v = np.where(mortar, f32(1.45), f32(0.9) + f32(0.2) * np.mod(brick * f32(0.618),
                                                                              f32(1.0)))
            elif tid == _T_WOOD:
                v = 1.0 + f32(0.1) * np.sin(uu * f32(37.0) + zz * f32(4.0))
            elif tid == _T_FABRIC:
                v = 1.0 + f32(0.07) * np.sin(zz * f32(90.0))
            elif tid == _T_METAL:
                v = 1.0 + f32(0.12) * np.cos(zz * f32(2.0))
            elif tid == _T_GLASS:
                # A thin darker frame along the edges; the pane itself stays faint.
                sl = seglen[m][:, None]
                frame = (uu < 0.035) | (uu > sl - 0.035) | (zz < 0.05) | \
                    ((zz > 2.0) & (zz < 2.06))
                v = np.where(frame, f32(0.5), f32(1.0))
                a_sub = a_pix[m]
                a_pix[m] = np.where(frame, f32(0.55), a_sub)
            else:
                continue
            shade[m] = v
        return shade, a_pix

    def _background(self, origin: np.ndarray, fwd: np.ndarray,
                    left: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Floor/ceiling colour (B, W, H, 3) and its forward distance (B, W, H)."""
        f32 = np.float32
        bsz, W, H = len(origin), len(self.x_col), len(self._bg_d)
        dir_x = fwd[:, None, 0] + self.x_col[None, :] * left[:, None, 0]  # (B, W)
        dir_y = fwd[:, None, 1] + self.x_col[None, :] * left[:, None, 1]
        shade = np.ones((bsz, W, H), f32)
        # The ceiling is plain (fine grid lines only alias at 64 px); the floor
        # gets faint 0.5 m carpet tiles or 1.5 m concrete joints as motion cues.
        rows = self._floor_rows
        if rows.stop > rows.start:
            d = self._bg_d[rows]
            px = origin[:, None, None, 0] + dir_x[..., None] * d  # world x of each pixel
            py = origin[:, None, None, 1] + dir_y[..., None] * d
            if self.floor_concrete:
                fx, fy = px * f32(1 / 1.5), py * f32(1 / 1.5)
                joint = ((fx - np.floor(fx)) < 0.03) | ((fy - np.floor(fy)) < 0.03)
                shade[:, :, rows] = np.where(joint, f32(0.85), f32(1.0))
            else:
                tile = (np.floor(px * f32(2.0)) + np.floor(py * f32(2.0))).astype(np.int32) & 1
                shade[:, :, rows] = f32(0.98) + f32(0.04) * tile
        col = shade[..., None] * self._bg_scale + self._bg_offset  # (B, W, H, 3)
        depth = np.broadcast_to(self._bg_depth, shade.shape)
        return col, depth


def _pad_indices(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-row indices of True entries, padded to the longest row.

    Returns (idx (B, L) int, ok (B, L) bool); padding repeats index 0 with ok False.
    """
    counts = mask.sum(axis=1)
    width = int(counts.max()) if len(counts) else 0
    if width == 0:
        return np.zeros((len(mask), 0), np.intp), np.zeros((len(mask), 0), bool)
    order = np.argsort(~mask, axis=1, kind="stable")[:, :width]
    ok = np.arange(width)[None, :] < counts[:, None]
    return np.where(ok, order, 0), ok
