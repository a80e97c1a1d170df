"""Exact ground truth by ray tracing: textured rectangles seen by pinhole cameras.

Used by the tests (anchors against the true new view and the true visibility) and for the bundled
sample clip. World coordinates are the first source camera's (OpenCV axes: +y down, +z forward).
Textures are smooth sums of sinusoids, so a correct renderer matches them closely while wrong
geometry does not.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .geometry import intrinsics_from_fov


@dataclass(frozen=True)
class Rect:
    """A textured rectangle ``origin + a * edge_u + b * edge_v`` for ``a, b`` in 0..1.

    ``colors`` are three RGB base colours; ``periods`` the wavelengths (scene units) of the three
    sinusoids along u, v and the diagonal.
    """

    origin: tuple[float, float, float]
    edge_u: tuple[float, float, float]
    edge_v: tuple[float, float, float]
    colors: tuple[tuple[float, float, float], ...]
    periods: tuple[float, float, float]


def scene_at(time: float = 0.0) -> list[Rect]:
    """A room corner: back wall, floor, a card that slides right over time, and a slanted panel."""
    card_x = -0.9 + 0.8 * time
    angle = math.radians(35)
    return [
        Rect((-9.0, -6.0, 6.0), (18.0, 0.0, 0.0), (0.0, 12.0, 0.0),
             ((0.55, 0.5, 0.42), (0.25, 0.2, 0.15), (0.1, 0.12, 0.2)), (0.9, 0.7, 0.5)),
        Rect((-9.0, 1.2, 0.3), (18.0, 0.0, 0.0), (0.0, 0.0, 5.7),
             ((0.35, 0.4, 0.3), (0.2, 0.15, 0.1), (0.1, 0.1, 0.08)), (0.6, 0.45, 0.8)),
        Rect((card_x, -0.7, 3.0), (1.4, 0.0, 0.0), (0.0, 1.3, 0.0),
             ((0.75, 0.3, 0.25), (0.15, 0.25, 0.2), (0.1, 0.1, 0.25)), (0.3, 0.25, 0.4)),
        Rect((0.9, -0.9, 2.4), (1.1 * math.cos(angle), 0.0, 1.1 * math.sin(angle)), (0.0, 1.8, 0.0),
             ((0.25, 0.4, 0.7), (0.2, 0.15, 0.15), (0.12, 0.1, 0.1)), (0.35, 0.3, 0.45)),
    ]


def _texture(rect: Rect, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    su = a * torch.tensor(rect.edge_u).norm()
    sv = b * torch.tensor(rect.edge_v).norm()
    pu, pv, pd = rect.periods
    waves = torch.stack([torch.sin(2 * math.pi * su / pu), torch.sin(2 * math.pi * sv / pv),
                         torch.sin(2 * math.pi * (su + sv) / pd)], dim=-1)
    base, amp_u, amp_v = (torch.tensor(c) for c in rect.colors)
    return (base + waves[..., :1] * amp_u + waves[..., 1:2] * amp_v + waves[..., 2:3] * 0.5 * amp_v).clamp(0, 1)


def render_scene(scene: list[Rect], camera_to_world: torch.Tensor, intrinsics: torch.Tensor, height: int,
                 width: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Ray traces a scene.

    Args:
        camera_to_world: ``(4, 4)`` camera pose (OpenCV axes).
        intrinsics: ``(3, 3)`` pixel intrinsics (pixel centres at integers).

    Returns:
        image ``(H, W, 3)``, z-depth ``(H, W)`` (0 where no surface), world points ``(H, W, 3)``.
    """
    c2w = camera_to_world.double()
    v, u = torch.meshgrid(torch.arange(height, dtype=torch.float64), torch.arange(width, dtype=torch.float64),
                          indexing="ij")
    pixels = torch.stack([u, v, torch.ones_like(u)], dim=-1)
    rays_cam = pixels @ torch.linalg.inv(intrinsics.double()).T  # z = 1: ray parameter = z-depth
    rays = rays_cam @ c2w[:3, :3].T
    centre = c2w[:3, 3]
    depth = torch.full((height, width), math.inf, dtype=torch.float64)
    image = torch.zeros(height, width, 3)
    for rect in scene:
        origin, eu, ev = (torch.tensor(x, dtype=torch.float64) for x in (rect.origin, rect.edge_u, rect.edge_v))
        normal = torch.linalg.cross(eu, ev)
        denom = rays @ normal
        t = ((origin - centre) @ normal) / torch.where(denom.abs() < 1e-12, torch.full_like(denom, 1e-12), denom)
        rel = centre + t[..., None] * rays - origin
        a, b = rel @ eu / (eu @ eu), rel @ ev / (ev @ ev)
        hit = (t > 1e-6) & (a >= 0) & (a <= 1) & (b >= 0) & (b <= 1) & (t < depth)
        depth = torch.where(hit, t, depth)
        image = torch.where(hit[..., None], _texture(rect, a.float(), b.float()), image)
    points = (centre + depth[..., None] * rays).float()
    depth = torch.where(torch.isinf(depth), torch.zeros_like(depth), depth)
    return image, depth.float(), points


@dataclass(frozen=True)
class SyntheticClip:
    frames: torch.Tensor  # (N, H, W, 3)
    depth: torch.Tensor  # (N, H, W) exact z-depth
    intrinsics: torch.Tensor  # (3, 3)
    times: tuple[float, ...]  # scene time of each frame (the card moves)


def source_clip(num_frames: int, height: int, width: int, fov_deg: float = 60.0,
                motion: bool = True) -> SyntheticClip:
    """A static source camera at the world origin filming the scene; the card moves when ``motion``."""
    k = intrinsics_from_fov(fov_deg, height, width)
    times = tuple(i / max(1, num_frames - 1) if motion else 0.0 for i in range(num_frames))
    frames, depths = [], []
    for t in times:
        image, depth, _ = render_scene(scene_at(t), torch.eye(4), k, height, width)
        frames.append(image)
        depths.append(depth)
    return SyntheticClip(torch.stack(frames), torch.stack(depths), k, times)


def visible_from_source(scene: list[Rect], source_to_world: torch.Tensor, source_intrinsics: torch.Tensor,
                        new_to_world: torch.Tensor, new_intrinsics: torch.Tensor, height: int, width: int,
                        tolerance: float = 0.01) -> tuple[torch.Tensor, torch.Tensor]:
    """The true new view and which of its pixels the source camera saw.

    A new-view pixel is visible when its surface point projects inside the source image and the
    source's depth at that pixel equals the point's depth there (within ``tolerance``, relative):
    nothing nearer hid it from the source.

    Returns:
        image ``(H, W, 3)`` of the new view and visibility ``(H, W)`` bool.
    """
    image, depth, points = render_scene(scene, new_to_world, new_intrinsics, height, width)
    _, source_depth, _ = render_scene(scene, source_to_world, source_intrinsics, height, width)
    w2s = torch.linalg.inv(source_to_world.double())
    p = points.double() @ w2s[:3, :3].T + w2s[:3, 3]
    z = p[..., 2]
    uv = (p @ source_intrinsics.double().T)[..., :2] / z.clamp_min(1e-9)[..., None]
    u, v = uv[..., 0].round().long(), uv[..., 1].round().long()
    inside = (depth > 0) & (z > 1e-6) & (u >= 0) & (u < width) & (v >= 0) & (v < height)
    seen_depth = source_depth[v.clamp(0, height - 1), u.clamp(0, width - 1)].double()
    visible = inside & ((seen_depth - z).abs() <= tolerance * z)
    return image, visible
