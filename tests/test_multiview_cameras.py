"""Our camera paths as Stable Virtual Camera takes them: Plücker maps against rays worked out by hand,
and the scene scale that keeps an orbit's subject where the model expects it."""

from __future__ import annotations

import doctest
import math

import pytest
import torch

from recapture import camera, multiview
from recapture.multiview import SEVA_SUBJECT_DISTANCE, plucker_map, seva_cameras, seva_intrinsics


def test_doctests():
    assert doctest.testmod(multiview).failed == 0


def test_plucker_map_of_known_cameras_equals_the_rays_worked_out_by_hand():
    """A 90-degree camera on a 24x24 image (3x3 latent: focal 1.5 latent pixels, centre 1.5) and a second
    one turned 90 degrees to the right (looking along +x) and moved 1 to the right."""
    turned = torch.eye(4)
    turned[:3, :3] = torch.tensor([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]])  # its z is the world's x
    turned[0, 3] = 1.0
    poses = torch.stack([torch.eye(4), turned])
    rays = plucker_map(poses, seva_intrinsics(torch.tensor([90.0, 90.0]), 24, 24), 24, 24)
    assert rays.shape == (2, 6, 3, 3)
    # view 0, latent pixel (u, v) = (0, 0): centre (0.5, 0.5) -> ((0.5 - 1.5) / 1.5, same, 1) = (-2/3, -2/3, 1)
    s = math.sqrt(4 / 9 + 4 / 9 + 1)
    torch.testing.assert_close(rays[0, :, 0, 0], torch.tensor([-2 / 3 / s, -2 / 3 / s, 1 / s, 0.0, 0.0, 0.0]))
    torch.testing.assert_close(rays[0, :, 1, 1], torch.tensor([0.0, 0.0, 1.0, 0.0, 0.0, 0.0]))  # the centre
    # view 1's centre ray is the world's +x from (1, 0, 0): moment (1, 0, 0) x (1, 0, 0) = 0
    torch.testing.assert_close(rays[1, :, 1, 1], torch.tensor([1.0, 0.0, 0.0, 0.0, 0.0, 0.0]))
    # its pixel (u, v) = (1, 0): camera ray (0, -2/3, 1) -> world (1, -2/3, 0) / n, moment (1,0,0) x d
    n = math.sqrt(1 + 4 / 9)
    d = torch.tensor([1 / n, -2 / 3 / n, 0.0])
    m = torch.linalg.cross(torch.tensor([1.0, 0.0, 0.0]), d, dim=0)
    torch.testing.assert_close(rays[1, :, 0, 1], torch.cat([d, m]))


def test_plucker_maps_are_relative_to_the_first_view_and_well_formed():
    path = camera.preset_path("orbit_left", 5, 20.0, pivot_distance=3.0)
    k = seva_intrinsics(path.fov_deg, 64, 96, source_fov_deg=60.0)
    rays = plucker_map(path.poses, k, 64, 96)
    # the whole rig moved and turned together gives the same maps
    angle = torch.tensor(0.7)
    rig = torch.eye(4)
    rig[:3, :3] = torch.tensor([[torch.cos(angle), 0.0, torch.sin(angle)], [0.0, 1.0, 0.0],
                                [-torch.sin(angle), 0.0, torch.cos(angle)]])
    rig[:3, 3] = torch.tensor([4.0, -1.0, 2.5])
    torch.testing.assert_close(plucker_map(rig @ path.poses, k, 64, 96), rays, atol=1e-5, rtol=0)
    directions, moments = rays[:, :3], rays[:, 3:]
    torch.testing.assert_close(directions.norm(dim=1), torch.ones(5, 8, 12))
    assert (directions * moments).sum(1).abs().max() < 1e-6  # a moment is perpendicular to its ray
    assert moments[0].abs().max() == 0  # the first view is the origin
    with pytest.raises(ValueError, match="multiple of 8"):
        plucker_map(path.poses, k, 60, 96)
    with pytest.raises(ValueError, match="give source_fov_deg"):
        seva_intrinsics(path.fov_deg, 64, 96)


def test_an_orbit_keeps_its_subject_at_the_models_distance():
    """The orbit preset circles a pivot the subject distance in front of the source camera; scaled by that
    distance, every camera is SEVA_SUBJECT_DISTANCE from the pivot, whatever the clip's scene units."""
    for distance in (0.8, 3.7, 25.0):
        path = camera.preset_path("orbit_left", 6, 30.0, pivot_distance=distance)
        centres = seva_cameras(path.poses, distance)[:, :3, 3]
        pivot = torch.tensor([0.0, 0.0, SEVA_SUBJECT_DISTANCE])
        torch.testing.assert_close((centres - pivot).norm(dim=1), torch.full((6,), SEVA_SUBJECT_DISTANCE))
    with pytest.raises(ValueError, match="subject distance must be positive"):
        seva_cameras(path.poses, 0.0)
