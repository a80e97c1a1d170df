"""The bundled demo clip: a synthetic clip with exact depth, written the way a user would bring one.

The video goes to ``recapture_sample.mp4`` and its depth to ``recapture_sample_depth/`` as 16-bit PNG
frames of relative inverse depth (bright = near), normalised over the clip so that the nearest point
is 1 and the farthest 0: DepthToPointCloud with ``depth_kind = inverse`` and the near/far below
recovers the exact depth (up to 16-bit quantisation).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .files import atomic_path
from .synthetic import source_clip
from .video import write_video

VIDEO_NAME = "recapture_sample.mp4"
DEPTH_FOLDER = "recapture_sample_depth"
FPS = 8.0
FOV_DEG = 60.0
SAMPLE_FRAMES = 60  # the shipped workflows' sample: the 14-frame ones take its first 14, the long-clip one all


def inverse_depth_16bit(depth: torch.Tensor) -> tuple[np.ndarray, float, float]:
    """``(N, H, W)`` z-depth -> uint16 clip-normalised inverse depth, and the (near, far) it spans."""
    near, far = float(depth.min()), float(depth.max())
    disparity = (1.0 / depth - 1.0 / far) / (1.0 / near - 1.0 / far)
    return (disparity.clamp(0, 1) * 65535.0 + 0.5).to(torch.int32).numpy().astype(np.uint16), near, far


def write_demo_clip(out: Path, num_frames: int = SAMPLE_FRAMES, width: int = 1024, height: int = 576) -> list[Path]:
    """Writes the sample video, its depth frames and ``recapture_sample.json`` (near, far, fov) into ``out``.
    The scene's motion spans the clip whatever ``num_frames`` (so near and far do not depend on it)."""
    clip = source_clip(num_frames, height, width, fov_deg=FOV_DEG)
    frames, depth = clip.frames, clip.depth
    out.mkdir(parents=True, exist_ok=True)
    video = write_video(out / VIDEO_NAME, frames, FPS)
    depth16, near, far = inverse_depth_16bit(depth)
    folder = out / DEPTH_FOLDER
    folder.mkdir(exist_ok=True)
    for i, d in enumerate(depth16):
        with atomic_path(folder / f"{i:04d}.png") as tmp:
            Image.fromarray(d).save(tmp, format="PNG")
    info = out / "recapture_sample.json"
    with atomic_path(info) as tmp:
        tmp.write_text(json.dumps({"video": VIDEO_NAME, "depth": DEPTH_FOLDER + "/", "depth_kind": "inverse",
                                   "near": near, "far": far, "fov_deg": FOV_DEG, "fps": FPS}, indent=2))
    return [video, folder, info]
