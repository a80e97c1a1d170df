"""Point-cloud files: a frame's points for Preview 3D (``.glb``, ``.ply``) and for the camera editor."""

from __future__ import annotations

import json
import math
import os
import struct

import numpy as np

from .files import atomic_path
from .geometry import unproject
from .types import PointCloud


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
