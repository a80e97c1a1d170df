"""From frames and depth to per-frame point clouds.

Conventions as in ``recapture.types``: OpenCV camera axes, pixel centres at integer coordinates,
z-depth, depth ``0`` = no point.
"""

from __future__ import annotations

import math

import torch

from .config import DEPTH_KINDS, PointCloudConfig, check_setting
from .geometry import intrinsics_from_fov
from .types import PointCloud


def depth_to_metric(depth: torch.Tensor, kind: str, near: float = PointCloudConfig.near,
                    far: float = PointCloudConfig.far) -> torch.Tensor:
    """Converts a clip's depth maps to z-depth; ``0`` marks pixels without a usable value.

    Relative depth is normalised over the whole clip (one min/max for all frames), never per frame, so
    the scene keeps its scale from frame to frame.

    Args:
        depth: ``(N, H, W)`` raw depth.
        kind: ``metric`` (z-depth, returned as is), ``inverse`` (relative inverse depth / disparity,
            larger = nearer: mapped linearly in inverse depth so the clip's largest value lands at
            ``near`` and its smallest at ``far``) or ``relative`` (larger = farther: mapped linearly
            from ``near`` to ``far``).
        near, far: distances (scene units) that relative depth is mapped to; ``0 < near < far``.

    Returns:
        ``(N, H, W)`` float32 z-depth.
    """
    if kind not in DEPTH_KINDS:
        raise ValueError(f"unknown depth kind {kind!r}: use one of {', '.join(DEPTH_KINDS)}")
    depth = depth.float()
    valid = torch.isfinite(depth)
    if kind == "metric":
        valid &= depth > 0
    if not valid.any():
        raise ValueError(
            "the depth has no valid value (all NaN, infinite, or <= 0 for metric depth): check that the depth "
            "input is connected to the right node and that depth_kind matches it")
    if kind == "metric":
        return torch.where(valid, depth, torch.zeros_like(depth))
    if not (0 < near < far and math.isfinite(far)):
        raise ValueError(f"near and far must satisfy 0 < near < far, got near={near}, far={far}")
    lo, hi = depth[valid].min(), depth[valid].max()
    d = (depth - lo) / (hi - lo).clamp_min(1e-12)
    if kind == "inverse":
        z = 1.0 / (1.0 / far + d * (1.0 / near - 1.0 / far))
    else:
        z = near + d * (far - near)
    return torch.where(valid, z, torch.zeros_like(z))


def depth_edges(depth: torch.Tensor, threshold: float) -> torch.Tensor:
    """Pixels on depth discontinuities: ``(N, H, W)`` bool.

    A pixel is an edge when its inverse depth differs from a 4-neighbour's by more than ``threshold``
    of its own, which catches the blurred ramps monocular depth puts between near and far objects
    (both sides of the jump). Invalid neighbours (depth 0) do not count.
    """
    disparity = torch.where(depth > 0, 1.0 / depth.clamp_min(1e-12), torch.zeros_like(depth))
    edges = torch.zeros_like(depth, dtype=torch.bool)
    for dim in (1, 2):
        a = disparity.narrow(dim, 0, disparity.shape[dim] - 1)
        b = disparity.narrow(dim, 1, disparity.shape[dim] - 1)
        both = (a > 0) & (b > 0)
        jump = (a - b).abs()
        a_edge = both & (jump > threshold * a)
        b_edge = both & (jump > threshold * b)
        edges.narrow(dim, 0, edges.shape[dim] - 1).logical_or_(a_edge)
        edges.narrow(dim, 1, edges.shape[dim] - 1).logical_or_(b_edge)
    return edges


def remove_depth_edges(depth: torch.Tensor, threshold: float) -> torch.Tensor:
    """``depth`` with points on depth discontinuities removed (set to 0); ``threshold <= 0`` keeps all."""
    if threshold <= 0:
        return depth
    return depth.masked_fill(depth_edges(depth, threshold), 0.0)


def make_point_cloud(frames: torch.Tensor, depth: torch.Tensor, *, kind: str, fov_deg: float = PointCloudConfig.fov_deg,
                     near: float = PointCloudConfig.near, far: float = PointCloudConfig.far,
                     edge_threshold: float = PointCloudConfig.edge_threshold,
                     align_depth: bool = PointCloudConfig.align_depth) -> PointCloud:
    """Frames and their depth -> per-frame point clouds in each frame's camera.

    Args:
        frames: ``(N, H, W, 3)`` colours in 0..1.
        depth: ``(N, H, W)`` raw depth of ``kind`` (see ``depth_to_metric``), at the frames' size.
        fov_deg: horizontal field of view of the source camera (same for every frame).
        edge_threshold: relative inverse-depth jump that marks a discontinuity (see ``depth_edges``).
        align_depth: remove per-frame scale/shift drift of relative depth first (``recapture.depth_align``).
    """
    for name, value in (("fov_deg", fov_deg), ("near", near), ("far", far), ("edge_threshold", edge_threshold)):
        check_setting(PointCloudConfig, name, value)  # a NaN edge_threshold would turn edge removal off
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be (N, H, W, 3), got shape {tuple(frames.shape)}")
    if depth.ndim != 3:
        raise ValueError(f"depth must be (N, H, W), got shape {tuple(depth.shape)}")
    if frames.shape[0] != depth.shape[0]:
        raise ValueError(
            f"there are {frames.shape[0]} frames but {depth.shape[0]} depth maps: make the depth from the same "
            "frames (same start, count and every-n-th)")
    if frames.shape[1:3] != depth.shape[1:3]:
        raise ValueError(
            f"the frames are {frames.shape[2]}x{frames.shape[1]} but the depth is {depth.shape[2]}x{depth.shape[1]}: "
            "resize the depth to the frames' size")
    if not torch.isfinite(frames).all():
        raise ValueError(f"the frames have {int((~torch.isfinite(frames)).sum())} NaN or infinite values: they "
                         "must be colours in 0..1; fix the step that made them")
    n, h, w = depth.shape
    intrinsics = intrinsics_from_fov(fov_deg, h, w).to(depth.device).expand(n, 3, 3).contiguous()
    if align_depth:
        from .depth_align import align_depth as steady

        depth = steady(depth, kind)
    metric = remove_depth_edges(depth_to_metric(depth, kind, near, far), edge_threshold)
    return PointCloud(colors=frames.float().clamp(0, 1), depth=metric, intrinsics=intrinsics,
                      metric=kind == "metric")
