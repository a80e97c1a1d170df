"""Pinhole geometry every stage shares: field of view and focal length, intrinsics, rigid transforms.

Conventions are those of ``recapture.types``: OpenCV camera axes (+x right, +y down, +z forward),
pixel centres at integer coordinates, z-depth. Fields of view are horizontal, in degrees, across the
image's full width (edge to edge).
"""

from __future__ import annotations

import math

import torch


def focal_from_fov(fov_deg, width):
    """Focal length in pixels of a camera whose ``width`` pixels span ``fov_deg`` degrees.

    Args:
        fov_deg: a float, or a tensor of any shape (element-wise).
        width: image width in pixels (or 1.0 for a focal length in image widths).

    >>> round(focal_from_fov(90.0, 1024), 6)
    512.0
    >>> focal_from_fov(torch.tensor([90.0, 60.0]), 2.0)
    tensor([1.0000, 1.7321])
    """
    if torch.is_tensor(fov_deg):
        return width / (2.0 * torch.tan(torch.deg2rad(fov_deg) / 2.0))
    return width / (2.0 * math.tan(math.radians(fov_deg) / 2.0))


def fov_from_focal(focal, width):
    """The inverse of ``focal_from_fov``: horizontal field of view in degrees.

    >>> round(fov_from_focal(512.0, 1024), 6)
    90.0
    >>> fov_from_focal(torch.tensor([1.0, 1.7320508]), 2.0)
    tensor([90.0000, 60.0000])
    """
    if torch.is_tensor(focal):
        return torch.rad2deg(2.0 * torch.atan(width / (2.0 * focal)))
    return math.degrees(2.0 * math.atan(width / (2.0 * focal)))


def intrinsics_from_fov(fov_deg: float, height: int, width: int) -> torch.Tensor:
    """Pinhole intrinsics ``(3, 3)`` for a horizontal field of view, square pixels, centred principal point.

    The principal point is ``((width - 1) / 2, (height - 1) / 2)`` because pixel centres sit at integers.

    >>> intrinsics_from_fov(90.0, 3, 4)
    tensor([[2.0000, 0.0000, 1.5000],
            [0.0000, 2.0000, 1.0000],
            [0.0000, 0.0000, 1.0000]])
    """
    if not (isinstance(fov_deg, (int, float)) and 1.0 <= fov_deg <= 179.0):
        raise ValueError(f"fov_deg must be between 1 and 179 degrees, got {fov_deg}")
    f = focal_from_fov(fov_deg, width)
    return torch.tensor([[f, 0.0, (width - 1) / 2.0], [0.0, f, (height - 1) / 2.0], [0.0, 0.0, 1.0]])


def invert_rigid(pose: torch.Tensor) -> torch.Tensor:
    """Inverse of rigid transforms ``(N, 4, 4)`` without a general matrix inverse.

    >>> pose = torch.eye(4)[None].clone(); pose[0, :3, 3] = torch.tensor([1.0, 2.0, 3.0])
    >>> invert_rigid(pose)[0, :3, 3]
    tensor([-1., -2., -3.])
    """
    r, t = pose[:, :3, :3], pose[:, :3, 3:]
    inv = torch.zeros_like(pose)
    inv[:, :3, :3] = r.transpose(1, 2)
    inv[:, :3, 3:] = -r.transpose(1, 2) @ t
    inv[:, 3, 3] = 1.0
    return inv


def unproject(depth: torch.Tensor, intrinsics: torch.Tensor) -> torch.Tensor:
    """Each pixel's 3D point in its camera: ``(N, H, W)`` z-depth, ``(N, 3, 3)`` -> ``(N, H, W, 3)``.

    >>> unproject(torch.full((1, 3, 4), 2.0), intrinsics_from_fov(90.0, 3, 4)[None])[0, 0, 0]
    tensor([-1.5000, -1.0000,  2.0000])
    """
    from kornia.geometry import create_meshgrid
    from kornia.geometry.camera import unproject_points

    n, h, w = depth.shape
    pixels = create_meshgrid(h, w, normalized_coordinates=False, device=depth.device, dtype=depth.dtype)
    pixels = pixels.expand(n, h, w, 2)
    return unproject_points(pixels, depth[..., None], intrinsics[:, None, None], normalize=False)
