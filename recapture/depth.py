"""Monocular depth from a local transformers depth-estimation folder (Depth Anything, ZoeDepth, DPT...)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

from .types import DepthMaps

# transformers model types whose post-processed output is metric z-depth; every other
# depth-estimation model (DPT, Depth Anything "relative", ...) gives relative inverse depth.
_METRIC_MODEL_TYPES = {"zoedepth", "depth_pro", "glpn", "prompt_depth_anything"}


class DepthModelError(ValueError):
    """A depth model folder that cannot be used; the message names the fix."""


@dataclass
class DepthEstimator:
    model: Any
    processor: Any
    kind: str

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


def is_depth_model_folder(folder: str | os.PathLike) -> bool:
    folder = Path(folder)
    return (folder / "config.json").is_file() and any(folder.glob("*.safetensors"))


def depth_kind_of(config: Any) -> str:
    """``"metric"`` or ``"inverse"`` for a transformers depth model config."""
    if config.model_type in _METRIC_MODEL_TYPES:
        return "metric"
    if getattr(config, "depth_estimation_type", "relative") == "metric":
        return "metric"
    return "inverse"


def load_depth_model(folder: str | os.PathLike, device: torch.device | str = "cpu",
                     dtype: torch.dtype = torch.float32) -> DepthEstimator:
    """Loads a transformers depth-estimation model from a local folder, safetensors only, offline."""
    from transformers import AutoConfig, AutoImageProcessor, AutoModelForDepthEstimation

    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise DepthModelError(
            f"{folder} is not a transformers model folder (no config.json): put a depth-estimation "
            "model folder (e.g. Depth-Anything-V2-Small-hf) into models/depth/"
        )
    if not any(folder.glob("*.safetensors")):
        raise DepthModelError(
            f"{folder} has no .safetensors weights: only safetensors are loaded (never pickled .bin "
            "files); download the safetensors version of the model"
        )
    from .files import safetensors_keys

    for weights in sorted(folder.glob("*.safetensors")):  # headers only: a damaged file is named, not loaded
        try:
            safetensors_keys(weights)
        except ValueError as e:
            raise DepthModelError(str(e)) from e
    try:
        config = AutoConfig.from_pretrained(folder, local_files_only=True)
        processor = AutoImageProcessor.from_pretrained(folder, local_files_only=True)
        model = AutoModelForDepthEstimation.from_pretrained(
            folder, local_files_only=True, use_safetensors=True, dtype=dtype
        )
    except (OSError, ValueError, KeyError) as e:
        raise DepthModelError(f"cannot load a depth-estimation model from {folder}: {e}") from e
    model.eval().to(device)
    return DepthEstimator(model=model, processor=processor, kind=depth_kind_of(config))


@torch.no_grad()
def estimate_depth(estimator: DepthEstimator, frames: torch.Tensor, batch_size: int = 4,
                   on_batch: Callable[[int], None] | None = None) -> DepthMaps:
    """Depth for each frame, at the frames' size.

    Args:
        frames: ``(N, H, W, 3)`` float32 in 0..1.
        batch_size: frames per forward pass.
        on_batch: called with the number of frames done after each batch (progress and cancel).

    Returns:
        ``DepthMaps`` with ``values (N, H, W)`` on the CPU and the model's kind of depth.
    """
    n, h, w, _ = frames.shape
    out = []
    for start in range(0, n, batch_size):
        batch = frames[start : start + batch_size]
        images = [(f.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy() for f in batch]
        inputs = estimator.processor(images=images, return_tensors="pt")
        inputs = {k: v.to(estimator.device, estimator.model.dtype) if v.is_floating_point() else v.to(estimator.device)
                  for k, v in inputs.items()}
        outputs = estimator.model(**inputs)
        post = getattr(estimator.processor, "post_process_depth_estimation", None)
        if post is not None:
            depth = torch.stack([d["predicted_depth"].float() for d in post(outputs, target_sizes=[(h, w)] * len(images))])
        else:
            depth = outputs.predicted_depth.float()
        if depth.shape[-2:] != (h, w):
            depth = F.interpolate(depth[:, None], size=(h, w), mode="bicubic", align_corners=False)[:, 0]
        out.append(depth.cpu())
        if on_batch is not None:
            on_batch(len(images))
    return DepthMaps(values=torch.cat(out), kind=estimator.kind)


def nearness(depth: DepthMaps) -> torch.Tensor:
    """Depth for viewing: ``(N, H, W)`` in 0..1, 1 = nearest, normalised over the whole clip."""
    v = depth.values.float()
    valid = torch.isfinite(v)
    if depth.kind == "metric":
        valid &= v > 0
        x = 1.0 / v.clamp_min(1e-6)
    elif depth.kind == "relative":
        x = -v
    else:
        x = v
    if not valid.any():
        return torch.zeros_like(v)
    lo, hi = x[valid].min(), x[valid].max()
    return torch.where(valid, (x - lo) / (hi - lo).clamp_min(1e-8), torch.zeros_like(x))


def depth_from_image(depth: torch.Tensor) -> torch.Tensor:
    """Depth that other packs' nodes output as IMAGE ``(N, H, W, C)`` or MASK ``(N, H, W)`` /
    ``(H, W)`` -> ``(N, H, W)`` float32 (the mean of the colour channels: depth images are grey)."""
    if depth.ndim == 4:
        return depth[..., :3].float().mean(dim=-1)
    if depth.ndim == 3:
        return depth.float()
    if depth.ndim == 2:
        return depth.float()[None]
    raise ValueError(f"depth must be an IMAGE (N,H,W,C) or a MASK (N,H,W), got shape {tuple(depth.shape)}")


def match_depth_size(depth: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Resizes ``(N, h, w)`` depth to ``(N, height, width)`` when only the resolution differs.

    Depth nodes often work at their own resolution; the same aspect ratio (within 1 %) is resized with
    nearest-neighbour sampling (no blending of near and far values into points that float in between),
    a different aspect ratio is an error.
    """
    n, h, w = depth.shape
    if (h, w) == (height, width):
        return depth
    if abs((w / h) / (width / height) - 1.0) > 0.01:
        raise ValueError(
            f"the depth is {w}x{h} but the frames are {width}x{height} (another aspect ratio): make the "
            "depth from the same frames, or resize both the same way"
        )
    return F.interpolate(depth[:, None], size=(height, width), mode="nearest-exact")[:, 0]
