"""Cameras for the multi-view anchor: our camera paths in the terms Stable Virtual Camera takes.

ReCapture's second Stage-1 path makes each anchor frame with a multi-view diffusion model from the
source frame and the new camera (docs/multiview.md). Our ``CameraPath`` poses map the new camera to
its source camera (OpenCV axes: +x right, +y down, +z forward), so with the source camera as the
world they are camera-to-world matrices already. The model wants three things from them:

- intrinsics normalised by the image size, with pixel *edges* at 0 (``recapture.geometry`` puts pixel
  centres at integers: a shift of half a pixel);
- translations in its own scene scale, where an orbited subject sits ``SEVA_SUBJECT_DISTANCE`` from the
  cameras: we scale by the clip's subject distance (the pivot), so "15 % of the subject distance"
  moves the camera as far as in the point-cloud path;
- a Plücker ray map per view at latent resolution, relative to the first view of each pass.
"""

from __future__ import annotations

import math

import torch

from .geometry import focal_from_fov, invert_rigid

SEVA_SUBJECT_DISTANCE = 2.0  # the model's scene scale: cameras are normalised so an orbit's centre is 2 away
LATENT_FACTOR = 8  # the VAE's downsampling: Plücker maps are made at latent resolution


def seva_intrinsics(fov_deg: torch.Tensor, height: int, width: int, source_fov_deg: float = math.nan) -> torch.Tensor:
    """Normalised pinhole intrinsics ``(V, 3, 3)`` for horizontal fields of view ``fov_deg`` ``(V,)`` (NaN:
    the source camera's, ``source_fov_deg``, as in a ``CameraPath``): focal lengths in image widths /
    heights (square pixels), principal point at the image centre ``(0.5, 0.5)`` with pixel edges at 0 and 1.

    >>> seva_intrinsics(torch.tensor([90.0, math.nan]), 16, 32, source_fov_deg=60.0)[:, 0]
    tensor([[0.5000, 0.0000, 0.5000],
            [0.8660, 0.0000, 0.5000]])
    """
    fov_deg = torch.where(torch.isnan(fov_deg), torch.tensor(float(source_fov_deg)), fov_deg.float())
    if not torch.isfinite(fov_deg).all():
        raise ValueError("the camera path keeps the source camera's field of view: give source_fov_deg")
    focal = focal_from_fov(fov_deg, float(width))  # pixels
    k = torch.zeros(len(fov_deg), 3, 3)
    k[:, 0, 0], k[:, 1, 1] = focal / width, focal / height
    k[:, 0, 2] = k[:, 1, 2] = 0.5
    k[:, 2, 2] = 1.0
    return k


def seva_cameras(camera_to_world: torch.Tensor, subject_distance: float) -> torch.Tensor:
    """Camera-to-world poses ``(V, 4, 4)`` (OpenCV, in scene units) with their translations scaled so the
    subject, ``subject_distance`` scene units from the source camera, sits ``SEVA_SUBJECT_DISTANCE`` from
    it in the model's scale. Rotations are unchanged.

    >>> pose = torch.eye(4)[None].clone(); pose[0, 0, 3] = 0.5
    >>> seva_cameras(pose, 4.0)[0, :3, 3]
    tensor([0.2500, 0.0000, 0.0000])
    """
    if not subject_distance > 0:
        raise ValueError(f"the subject distance must be positive, got {subject_distance}")
    scaled = camera_to_world.clone()
    scaled[:, :3, 3] *= SEVA_SUBJECT_DISTANCE / subject_distance
    return scaled


def plucker_map(camera_to_world: torch.Tensor, intrinsics: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Each view's rays as Plücker coordinates at latent resolution, relative to the first view.

    View ``i``'s pose in the first view's frame is ``M_i = inv(P_0) @ P_i`` with rotation ``R_i`` and
    centre ``o_i``. A latent pixel ``(u, v)`` (centre at ``u + 0.5``, ``v + 0.5``) has the unit direction
    ``d = normalize(R_i @ inv(K_i) @ (u + 0.5, v + 0.5, 1))``, ``K_i`` being ``intrinsics`` scaled to the
    latent size, and the moment ``m = o_i x d``; the map holds ``(d, m)``.

    Args:
        camera_to_world: ``(V, 4, 4)`` OpenCV poses (e.g. ``seva_cameras``).
        intrinsics: ``(V, 3, 3)`` normalised intrinsics (``seva_intrinsics``).
        height, width: the image size in pixels, multiples of ``LATENT_FACTOR``.

    Returns:
        ``(V, 6, height / 8, width / 8)``: channels ``d_x, d_y, d_z, m_x, m_y, m_z``.
    """
    if height % LATENT_FACTOR or width % LATENT_FACTOR:
        raise ValueError(f"the image size must be a multiple of {LATENT_FACTOR}, got {width}x{height}")
    h, w = height // LATENT_FACTOR, width // LATENT_FACTOR
    poses = camera_to_world.double()
    relative = invert_rigid(poses[:1]) @ poses
    latent = intrinsics.double() * torch.tensor([w, h, 1.0], dtype=torch.float64)[None, :, None]
    v, u = torch.meshgrid(torch.arange(h, dtype=torch.float64) + 0.5, torch.arange(w, dtype=torch.float64) + 0.5,
                          indexing="ij")
    pixels = torch.stack([u, v, torch.ones_like(u)], -1).reshape(-1, 3)  # (h*w, 3)
    rays = torch.linalg.inv(latent) @ pixels.T  # (V, 3, h*w) in each camera
    directions = torch.nn.functional.normalize(relative[:, :3, :3] @ rays, dim=1)
    moments = torch.linalg.cross(relative[:, :3, 3:].expand_as(directions), directions, dim=1)
    return torch.cat([directions, moments], 1).reshape(len(poses), 6, h, w).float()
