"""Nearest surfaces of the true map, as half-plane constraints for the MPC."""

from __future__ import annotations

import numpy as np


class SurfaceIndex:
    """The colliding primitives of a building (segments and circles).

    Args:
        geometry: a `sim.geometry.CompiledGeometry`.
        body_height_m: objects entirely above this do not collide.
    """

    def __init__(self, geometry, body_height_m: float) -> None:
        seg_mask, circ_mask = geometry.colliders(body_height_m)
        self.seg_a = geometry.seg_a[seg_mask].astype(np.float64)
        self.seg_b = geometry.seg_b[seg_mask].astype(np.float64)
        self.circ_c = geometry.circ_c[circ_mask].astype(np.float64)
        self.circ_r = geometry.circ_r[circ_mask].astype(np.float64)

    def nearest(self, points: np.ndarray, count: int, around_xy: np.ndarray, radius_m: float
                ) -> tuple[np.ndarray, np.ndarray]:
        """The `count` nearest surface points to each of `points`, with normals.

        Only primitives within `radius_m` of `around_xy` are considered; slots
        without a surface get a far-away point whose constraint never binds.

        Args:
            points: (K, 2) query points (the predicted positions per stage).
            count: surfaces per point.
            around_xy: (2,) the robot position.
            radius_m: search radius around the robot.

        Returns:
            (q (K, count, 2) surface points, n (K, count, 2) unit normals from
            the surface towards the query point).
        """
        pts = np.asarray(points, float)
        k = len(pts)
        around = np.asarray(around_xy, float)
        cand_q, cand_d = [], []
        if len(self.seg_a):
            ab = self.seg_b - self.seg_a
            ab2 = np.maximum((ab**2).sum(-1), 1e-12)
            t = np.clip(((around - self.seg_a) * ab).sum(-1) / ab2, 0, 1)
            near = np.linalg.norm(self.seg_a + t[:, None] * ab - around, axis=1) <= radius_m
            if near.any():
                a, abn, ab2n = self.seg_a[near], ab[near], ab2[near]
                tt = np.clip(((pts[:, None] - a[None]) * abn[None]).sum(-1) / ab2n[None], 0, 1)
                q = a[None] + tt[..., None] * abn[None]
                cand_q.append(q)
                cand_d.append(np.linalg.norm(pts[:, None] - q, axis=-1))
        if len(self.circ_c):
            near = np.linalg.norm(self.circ_c - around, axis=1) - self.circ_r <= radius_m
            if near.any():
                c, r = self.circ_c[near], self.circ_r[near]
                vec = pts[:, None] - c[None]
                norm = np.maximum(np.linalg.norm(vec, axis=-1), 1e-9)
                q = c[None] + vec / norm[..., None] * r[None, :, None]
                cand_q.append(q)
                cand_d.append(norm - r[None])
        # Filler: a surface 1 km to the +x side, normal towards the robot (never binds).
        q_out = np.tile(around + np.array([1e3, 0.0]), (k, count, 1))
        n_out = np.tile(np.array([-1.0, 0.0]), (k, count, 1))
        if not cand_q:
            return q_out, n_out
        q_all = np.concatenate(cand_q, axis=1)
        d_all = np.concatenate(cand_d, axis=1)
        take = min(count, d_all.shape[1])
        idx = np.argsort(d_all, axis=1)[:, :take]
        q_sel = np.take_along_axis(q_all, idx[..., None], axis=1)
        vec = pts[:, None] - q_sel
        norm = np.linalg.norm(vec, axis=-1, keepdims=True)
        # A query point on the surface has no direction: use the robot's side.
        fallback = around[None, None] - q_sel
        vec = np.where(norm > 1e-6, vec, fallback)
        norm = np.maximum(np.linalg.norm(vec, axis=-1, keepdims=True), 1e-9)
        q_out[:, :take] = q_sel
        n_out[:, :take] = vec / norm
        return q_out, n_out
