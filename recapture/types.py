"""The values that flow between ReCapture's steps.

Conventions used everywhere in the library:

- Camera axes are OpenCV's: +x right, +y down, +z forward (into the scene).
- Pixel coordinates ``(u, v)`` put the centre of pixel column ``u`` / row ``v`` at the integer
  ``u`` / ``v``; a centred principal point is ``((W - 1) / 2, (H - 1) / 2)``.
- Depth is z-depth (distance along the camera's +z axis), not ray length, in scene units.
- Images are float32 in 0..1, channels last, like ComfyUI's IMAGE.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

import torch

from .config import DEPTH_KINDS, Conditioning  # noqa: F401  (DEPTH_KINDS: what DepthMaps.kind may be)


def _on(value, device):
    """A copy of a frozen value with every tensor field on ``device``."""
    return replace(value, **{f.name: getattr(value, f.name).to(device) for f in fields(value)
                             if torch.is_tensor(getattr(value, f.name))})


@dataclass(frozen=True)
class PointCloud:
    """Per-frame point clouds, each in its own source camera's coordinates.

    Stored on the image grid (one point per pixel) rather than as a flat list: frame ``n``'s point
    at pixel ``(u, v)`` is ``depth[n, v, u] * K[n]^-1 @ (u, v, 1)`` with colour ``colors[n, v, u]``.

    Attributes:
        colors: ``(N, H, W, 3)`` float32 colours in 0..1 (the source frames).
        depth: ``(N, H, W)`` float32 z-depth in scene units; ``0`` marks "no point" (invalid depth or
            removed on a depth discontinuity).
        intrinsics: ``(N, 3, 3)`` float32 pixel intrinsics of each source camera.
        metric: whether the depth is in metres (from a metric model or the user's near/far).
    """

    colors: torch.Tensor
    depth: torch.Tensor
    intrinsics: torch.Tensor
    metric: bool = False

    @property
    def num_frames(self) -> int:
        return int(self.depth.shape[0])

    @property
    def height(self) -> int:
        return int(self.depth.shape[1])

    @property
    def width(self) -> int:
        return int(self.depth.shape[2])

    def fov_deg(self, frame: int = 0) -> float:
        """Horizontal field of view of a frame's source camera, in degrees."""
        from .geometry import fov_from_focal

        return fov_from_focal(float(self.intrinsics[frame, 0, 0]), self.width)

    def to(self, device) -> "PointCloud":
        return _on(self, device)


@dataclass(frozen=True)
class CameraPath:
    """A new camera for each output frame, relative to that frame's source camera.

    Attributes:
        poses: ``(N, 4, 4)`` float32 rigid transforms, new camera -> source camera of the same frame
            ("camera-to-source", OpenCV axes, scene units). Identity reproduces the source view; a
            translation of ``(0.1, 0, 0)`` moves the new camera 0.1 to the right.
        fov_deg: ``(N,)`` float32 horizontal field of view of the new camera in degrees; NaN keeps
            the source camera's intrinsics for that frame.
    """

    poses: torch.Tensor
    fov_deg: torch.Tensor

    @property
    def num_frames(self) -> int:
        return int(self.poses.shape[0])

    def to(self, device) -> "CameraPath":
        return _on(self, device)


@dataclass(frozen=True)
class DepthMaps:
    """Depth from ReCapture's own estimator, carrying what kind of depth it is.

    Attributes:
        values: ``(N, H, W)`` float32 raw model output (not normalised).
        kind: one of ``DEPTH_KINDS``: ``"metric"`` (z-depth in metres), ``"inverse"`` (relative inverse
            depth, larger = nearer) or ``"relative"`` (relative depth, larger = farther).
    """

    values: torch.Tensor
    kind: str


@dataclass
class SVDModels:
    """The parts of Stable Video Diffusion, as diffusers / transformers modules (imported lazily).

    Attributes:
        unet: ``diffusers.UNetSpatioTemporalConditionModel`` (the frozen base; LoRAs are injected into it).
        vae: ``diffusers.AutoencoderKLTemporalDecoder``.
        image_encoder: ``transformers.CLIPVisionModelWithProjection`` (OpenCLIP ViT-H/14 for real SVD).
        feature_extractor: ``transformers.CLIPImageProcessor`` (resize to 224, CLIP normalisation).
        scheduler: ``diffusers.EulerDiscreteScheduler`` configured as SVD's (v-prediction, Karras sigmas).
        num_frames: frames the checkpoint was trained for (14 for svd, 25 for svd_xt).
        name: where it came from (file or folder name), for messages and LoRA metadata.
    """

    unet: object
    vae: object
    image_encoder: object
    feature_extractor: object
    scheduler: object
    num_frames: int
    name: str


@dataclass
class TrainedLoRA:
    """ReCapture's two trained adapters, in memory as in their files.

    Attributes:
        temporal, spatial: each adapter's weights in core ComfyUI's LoRA keys (see ``recapture.lora``),
            on the CPU.
        rank, alpha: the adapters' rank and alpha (scale = alpha / rank).
        config: the ``TrainConfig`` they were trained with, as a dict (also in the files' metadata).
        losses: (temporal, spatial) loss per training step; empty for a pair loaded from files.
    """

    temporal: dict[str, torch.Tensor]
    spatial: dict[str, torch.Tensor]
    rank: int
    alpha: float
    config: dict = field(default_factory=dict)
    losses: list[tuple[float, float]] = field(default_factory=list)

    @property
    def conditioning(self) -> Conditioning:
        """SVD's conditioning the LoRAs were trained with (SVD's defaults where the file does not say)."""
        known = {f.name for f in fields(Conditioning)}
        return Conditioning(**{k: v for k, v in self.config.items() if k in known})
