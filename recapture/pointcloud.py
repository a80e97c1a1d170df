"""From frames and depth to per-frame point clouds, and point-cloud preview files.

Conventions as in ``recapture.types``: OpenCV camera axes, pixel centres at integer coordinates,
z-depth, depth ``0`` = no point.
"""

from __future__ import annotations

import json
import math
import os
import struct

import numpy as np
import torch

from .files import atomic_path
from .types import PointCloud

DEPTH_KINDS = ("metric", "inverse", "relative")


def intrinsics_from_fov(fov_deg: float, height: int, width: int) -> torch.Tensor:
    """Pinhole intrinsics ``(3, 3)`` for a horizontal field of view, square pixels, centred principal point.

    The image spans ``width`` pixels edge to edge, so ``fx = width / (2 tan(fov / 2))``; the principal
    point is ``((width - 1) / 2, (height - 1) / 2)`` because pixel centres sit at integers.
    """
    if not (isinstance(fov_deg, (int, float)) and 1.0 <= fov_deg <= 179.0):
        raise ValueError(f"fov_deg must be between 1 and 179 degrees, got {fov_deg}")
    f = width / (2.0 * math.tan(math.radians(fov_deg) / 2.0))
    return torch.tensor([[f, 0.0, (width - 1) / 2.0], [0.0, f, (height - 1) / 2.0], [0.0, 0.0, 1.0]])


def depth_to_metric(depth: torch.Tensor, kind: str, near: float = 1.0, far: float = 10.0) -> torch.Tensor:
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


def unproject(depth: torch.Tensor, intrinsics: torch.Tensor) -> torch.Tensor:
    """Each pixel's 3D point in its camera: ``(N, H, W)`` z-depth, ``(N, 3, 3)`` -> ``(N, H, W, 3)``."""
    from kornia.geometry.camera import unproject_points
    from kornia.geometry import create_meshgrid

    n, h, w = depth.shape
    pixels = create_meshgrid(h, w, normalized_coordinates=False, device=depth.device, dtype=depth.dtype)
    pixels = pixels.expand(n, h, w, 2)
    return unproject_points(pixels, depth[..., None], intrinsics[:, None, None], normalize=False)


def make_point_cloud(frames: torch.Tensor, depth: torch.Tensor, *, kind: str, fov_deg: float = 60.0,
                     near: float = 1.0, far: float = 10.0, edge_threshold: float = 0.04) -> PointCloud:
    """Frames and their depth -> per-frame point clouds in each frame's camera.

    Args:
        frames: ``(N, H, W, 3)`` colours in 0..1.
        depth: ``(N, H, W)`` raw depth of ``kind`` (see ``depth_to_metric``), at the frames' size.
        fov_deg: horizontal field of view of the source camera (same for every frame).
        edge_threshold: relative inverse-depth jump that marks a discontinuity (see ``depth_edges``).
    """
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
    metric = remove_depth_edges(depth_to_metric(depth, kind, near, far), edge_threshold)
    return PointCloud(colors=frames.float().clamp(0, 1), depth=metric, intrinsics=intrinsics,
                      metric=kind == "metric")


# --- Preview files ------------------------------------------------------------------------------------
def point_cloud_preview_points(cloud: PointCloud, frame: int = 0,
                               max_points: int = 100_000) -> tuple[np.ndarray, np.ndarray]:
    """A frame's valid points and colours, subsampled with an even stride: ``(M, 3)`` float32 each."""
    points = unproject(cloud.depth[frame : frame + 1], cloud.intrinsics[frame : frame + 1])[0]
    valid = cloud.depth[frame] > 0
    xyz = points[valid].cpu().numpy().astype(np.float32)
    rgb = cloud.colors[frame][valid].cpu().numpy().astype(np.float32)
    stride = max(1, math.ceil(len(xyz) / max_points))
    return xyz[::stride], rgb[::stride]


def write_preview_points(path: str | os.PathLike, points: np.ndarray, colors: np.ndarray) -> int:
    """The points for the browser's camera editor, in the simplest format a ``fetch`` can read into typed
    arrays: ``N`` x 3 little-endian float32 positions (OpenCV axes), then ``N`` x 3 uint8 colours.
    Returns ``N``."""
    rgb = (np.clip(colors, 0, 1) * 255 + 0.5).astype(np.uint8)
    with atomic_path(path) as tmp:
        tmp.write_bytes(np.ascontiguousarray(points, dtype="<f4").tobytes() + rgb.tobytes())
    return len(points)


def write_ply(path: str | os.PathLike, points: np.ndarray, colors: np.ndarray) -> None:
    """Binary little-endian PLY: float x y z (OpenCV axes), uchar red green blue."""
    data = np.empty(len(points), dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"),
                                        ("red", "u1"), ("green", "u1"), ("blue", "u1")])
    data["x"], data["y"], data["z"] = points.T
    rgb = (np.clip(colors, 0, 1) * 255 + 0.5).astype(np.uint8)
    data["red"], data["green"], data["blue"] = rgb.T
    header = ("ply\nformat binary_little_endian 1.0\ncomment ReCapture point cloud, OpenCV camera axes\n"
              f"element vertex {len(points)}\nproperty float x\nproperty float y\nproperty float z\n"
              "property uchar red\nproperty uchar green\nproperty uchar blue\nend_header\n")
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(header.encode("ascii"))
            f.write(data.tobytes())


def write_glb_points(path: str | os.PathLike, points: np.ndarray, colors: np.ndarray) -> None:
    """glTF 2.0 binary with one POINTS primitive (POSITION, COLOR_0) that three.js viewers display.

    glTF is +y up, -z forward: OpenCV's y and z are flipped.
    """
    xyz = (points * np.array([1, -1, -1], dtype=np.float32)).astype("<f4")
    rgba = np.concatenate([(np.clip(colors, 0, 1) * 255 + 0.5).astype(np.uint8),
                           np.full((len(colors), 1), 255, np.uint8)], axis=1)
    pos_bytes, col_bytes = xyz.tobytes(), rgba.tobytes()
    gltf = {
        "asset": {"version": "2.0", "generator": "ComfyUI-ReCapture"},
        "scene": 0, "scenes": [{"nodes": [0]}], "nodes": [{"mesh": 0}],
        "meshes": [{"primitives": [{"attributes": {"POSITION": 0, "COLOR_0": 1}, "mode": 0}]}],
        "buffers": [{"byteLength": len(pos_bytes) + len(col_bytes)}],
        "bufferViews": [{"buffer": 0, "byteOffset": 0, "byteLength": len(pos_bytes), "target": 34962},
                        {"buffer": 0, "byteOffset": len(pos_bytes), "byteLength": len(col_bytes), "target": 34962}],
        "accessors": [
            {"bufferView": 0, "componentType": 5126, "count": len(xyz), "type": "VEC3",
             "min": xyz.min(axis=0).tolist() if len(xyz) else [0, 0, 0],
             "max": xyz.max(axis=0).tolist() if len(xyz) else [0, 0, 0]},
            {"bufferView": 1, "componentType": 5121, "normalized": True, "count": len(rgba), "type": "VEC4"},
        ],
    }
    json_chunk = json.dumps(gltf, separators=(",", ":")).encode()
    json_chunk += b" " * (-len(json_chunk) % 4)
    bin_chunk = pos_bytes + col_bytes
    bin_chunk += b"\0" * (-len(bin_chunk) % 4)
    total = 12 + 8 + len(json_chunk) + 8 + len(bin_chunk)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(struct.pack("<III", 0x46546C67, 2, total))
            f.write(struct.pack("<II", len(json_chunk), 0x4E4F534A) + json_chunk)
            f.write(struct.pack("<II", len(bin_chunk), 0x004E4942) + bin_chunk)
