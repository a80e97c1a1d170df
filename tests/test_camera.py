"""Camera paths: preset geometry, the camera file, importers."""

from __future__ import annotations

import json
import math

import pytest
import torch

from recapture import camera
from recapture.camera import CameraPathError
from recapture.types import CameraPath


def centres(path: CameraPath) -> torch.Tensor:
    return path.poses[:, :3, 3]


@pytest.mark.parametrize("preset", [p for p in camera.PRESETS if p != "zoom_in" and p != "zoom_out"])
def test_every_preset_starts_at_the_source_and_stays_rigid(preset):
    path = camera.preset_path(preset, 7, 20, pivot_distance=2.0)
    torch.testing.assert_close(path.poses[0], torch.eye(4))
    r = path.poses[:, :3, :3]
    torch.testing.assert_close(r.transpose(1, 2) @ r, torch.eye(3).expand(7, 3, 3), atol=1e-5, rtol=0)
    assert torch.allclose(torch.linalg.det(r), torch.ones(7), atol=1e-5)
    assert torch.isnan(path.fov_deg).all()


def test_orbit_keeps_the_pivot_at_the_image_centre_and_its_distance():
    d = 2.5
    for preset in ("orbit_left", "orbit_right", "orbit_up", "orbit_down"):
        path = camera.preset_path(preset, 9, 40, pivot_distance=d)
        pivot_in_new = torch.linalg.inv(path.poses) @ torch.tensor([0.0, 0.0, d, 1.0])
        torch.testing.assert_close(pivot_in_new[:, :2], torch.zeros(9, 2), atol=1e-5, rtol=0)  # on the optical axis
        torch.testing.assert_close(pivot_in_new[:, 2], torch.full((9,), d), atol=1e-5, rtol=0)
        torch.testing.assert_close((centres(path) - torch.tensor([0, 0, d])).norm(dim=1), torch.full((9,), d))
    # directions: left is -x, up is -y (OpenCV +y is down)
    assert centres(camera.preset_path("orbit_left", 2, 30, pivot_distance=d))[-1, 0] == pytest.approx(-d * 0.5, abs=1e-5)
    assert centres(camera.preset_path("orbit_right", 2, 30, pivot_distance=d))[-1, 0] > 0
    assert centres(camera.preset_path("orbit_up", 2, 30, pivot_distance=d))[-1, 1] < 0
    assert centres(camera.preset_path("orbit_down", 2, 30, pivot_distance=d))[-1, 1] > 0


def test_rotations_in_place_and_moves():
    look = lambda p: p.poses[-1, :3, 2]  # the new optical axis in source coordinates  # noqa: E731
    assert look(camera.preset_path("pan_left", 2, 10))[0] < 0
    assert look(camera.preset_path("pan_right", 2, 10))[0] > 0
    assert look(camera.preset_path("tilt_up", 2, 10))[1] < 0
    assert look(camera.preset_path("tilt_down", 2, 10))[1] > 0
    for preset in ("pan_left", "tilt_up", "roll_right"):
        assert centres(camera.preset_path(preset, 5, 25)).abs().max() < 1e-6
    assert camera.preset_path("roll_right", 2, 10).poses[-1, 1, 0] > 0  # the x axis turns down: clockwise
    end = lambda preset: centres(camera.preset_path(preset, 3, 30, pivot_distance=2.0))[-1]  # noqa: E731
    torch.testing.assert_close(end("dolly_in"), torch.tensor([0.0, 0.0, 0.6]))
    torch.testing.assert_close(end("dolly_out"), torch.tensor([0.0, 0.0, -0.6]))
    torch.testing.assert_close(end("truck_right"), torch.tensor([0.6, 0.0, 0.0]))
    torch.testing.assert_close(end("truck_left"), torch.tensor([-0.6, 0.0, 0.0]))
    torch.testing.assert_close(end("pedestal_up"), torch.tensor([0.0, -0.6, 0.0]))
    torch.testing.assert_close(end("pedestal_down"), torch.tensor([0.0, 0.6, 0.0]))


def test_zoom_changes_only_the_focal_length():
    path = camera.preset_path("zoom_in", 3, 100, easing="linear", source_fov_deg=60.0)
    expected = [math.degrees(2 * math.atan(math.tan(math.radians(30)) / s)) for s in (1.0, 1.5, 2.0)]
    torch.testing.assert_close(path.fov_deg, torch.tensor(expected))
    assert camera.preset_path("zoom_out", 2, 100).fov_deg[-1] == pytest.approx(
        math.degrees(2 * math.atan(math.tan(math.radians(30)) * 2)))
    torch.testing.assert_close(path.poses, torch.eye(4).expand(3, 4, 4))


def test_easing_profiles():
    t = torch.linspace(0, 1, 5)
    for easing in camera.EASINGS:
        e = camera.ease(t, easing)
        assert e[0] == 0 and e[-1] == pytest.approx(1.0)
        assert (e[1:] >= e[:-1]).all()
    assert camera.ease(t, "ease_in")[1] < 0.25 < camera.ease(t, "ease_out")[1]
    angles = [math.degrees(math.atan2(-p[0, 2].item(), p[0, 0].item()))
              for p in camera.preset_path("pan_right", 5, 40, easing="linear").poses]
    assert angles == pytest.approx([0, -10, -20, -30, -40], abs=1e-4)  # evenly spaced


def test_single_frame_gets_the_full_move_and_bad_values_are_named():
    assert centres(camera.preset_path("dolly_in", 1, 50, pivot_distance=2.0))[0, 2] == pytest.approx(1.0)
    with pytest.raises(CameraPathError, match="unknown camera preset 'spin'.*orbit_left"):
        camera.preset_path("spin", 3, 1)
    with pytest.raises(CameraPathError, match="unknown easing"):
        camera.preset_path("static", 3, 1, easing="bounce")
    with pytest.raises(CameraPathError, match="pivot_distance must be > 0"):
        camera.preset_path("orbit_left", 3, 10, pivot_distance=0)
    with pytest.raises(CameraPathError, match="at least 1 frame"):
        camera.preset_path("static", 0, 1)
    with pytest.raises(CameraPathError, match="finite"):
        camera.preset_path("pan_left", 3, float("nan"))


def test_pivot_distance_is_the_central_depth():
    depth = torch.full((40, 60), 8.0)
    depth[15:25, 25:35] = 2.0
    assert camera.pivot_distance_from_depth(depth) == pytest.approx(2.0)
    depth[15:25, 25:35] = 0.0  # invalid centre: the whole image decides
    assert camera.pivot_distance_from_depth(depth) == pytest.approx(8.0)
    with pytest.raises(CameraPathError, match="no valid value"):
        camera.pivot_distance_from_depth(torch.zeros(4, 4))


def test_camera_file_round_trip_is_exact(tmp_path):
    path = camera.preset_path("orbit_left", 6, 25, pivot_distance=3.0)
    path = CameraPath(poses=path.poses, fov_deg=torch.tensor([math.nan, 50, 51, 52, 53, 54.5]))
    file = camera.save_path_json(path, tmp_path / "path.json")
    data = json.loads(file.read_text())
    assert data["version"] == 1 and data["convention"] == "opencv" and "fov_deg" not in data["frames"][0]
    back = camera.load_path_json(file)
    assert torch.equal(back.poses, path.poses)
    torch.testing.assert_close(back.fov_deg, path.fov_deg, equal_nan=True)
    assert camera.load_path_file(file).num_frames == 6


IDENTITY = [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]


@pytest.mark.parametrize("text, message", [
    ('{"version": 1, "convention": "opencv", "frames": [', "not valid JSON: .* line 1, column"),
    ('{"version": 2, "convention": "opencv", "frames": []}', "version 2"),
    ('{"version": 1, "convention": "opengl", "frames": [{"pose": []}]}', "'convention' must be \\\"opencv\\\""),
    ('{"version": 1, "convention": "opencv", "frames": []}', "non-empty list"),
    ('{"version": 1, "convention": "opencv", "frames": [{"pose": %s}, {"pose": [[1, 0, 0], [0, 1, 0]]}]}'
     % json.dumps(IDENTITY), "frame 1: 'pose' must be a 4x4"),
    ('{"version": 1, "convention": "opencv", "frames": [{"pose": [[2,0,0,0],[0,1,0,0],[0,0,1,0],[0,0,0,1]]}]}',
     "frame 0: the rotation part of 'pose' is not a rigid rotation"),
    ('{"version": 1, "convention": "opencv", "frames": [{"pose": [[1,0,0,0],[0,1,0,0],[0,0,1,0],[0,0,1,1]]}]}',
     "frame 0: the last row"),
    ('{"version": 1, "convention": "opencv", "frames": [{"pose": %s, "fov_deg": 200}]}' % json.dumps(IDENTITY),
     "frame 0: 'fov_deg' must be"),
    ('{"version": 1, "convention": "opencv", "frames": [{"pose": [[1,0,0,"a"],[0,1,0,0],[0,0,1,0],[0,0,0,1]]}]}',
     "frame 0: 'pose' must hold only numbers"),
])
def test_malformed_camera_files_say_where(tmp_path, text, message):
    file = tmp_path / "bad.json"
    file.write_text(text)
    with pytest.raises(CameraPathError, match=message):
        camera.load_path_file(file)


def known_trajectory(n: int = 6) -> torch.Tensor:
    """Camera-to-world poses (OpenCV axes) of an arbitrary path in an arbitrary world frame."""
    path = camera.preset_path("orbit_left", n, 30, pivot_distance=2.0, easing="linear")
    moved = camera.preset_path("pedestal_up", n, 30, pivot_distance=2.0, easing="ease_in").poses
    world_from_first = camera.preset_path("pan_right", 2, 37).poses[-1].clone()
    world_from_first[:3, 3] = torch.tensor([3.0, -1.0, 5.0])
    return world_from_first @ path.poses @ moved


def test_realestate10k_import_equals_its_source(tmp_path):
    c2w = known_trajectory()
    lines = ["https://www.youtube.com/watch?v=example"]
    for i, pose in enumerate(c2w):
        w2c = torch.linalg.inv(pose.double())[:3].reshape(-1).tolist()
        lines.append(" ".join(str(v) for v in [1000 * i, 0.8, 1.4, 0.5, 0.5, 0, 0, *w2c]))
    file = tmp_path / "cameras.txt"
    file.write_text("\n".join(lines))
    path = camera.load_path_file(file)
    expected = torch.linalg.inv(c2w[0]) @ c2w
    torch.testing.assert_close(path.poses, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(path.fov_deg, torch.full((6,), math.degrees(2 * math.atan(0.5 / 0.8))))
    doubled = camera.load_path_file(file, scale=2.0)
    torch.testing.assert_close(doubled.poses[:, :3, 3], 2 * expected[:, :3, 3], atol=1e-5, rtol=0)


def test_nerf_transforms_import_equals_its_source(tmp_path):
    c2w = known_trajectory()
    opengl = c2w @ torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0]))
    data = {"camera_angle_x": math.radians(50),
            "frames": [{"file_path": f"images/{i}.png", "transform_matrix": p.tolist()} for i, p in enumerate(opengl)]}
    file = tmp_path / "transforms.json"
    file.write_text(json.dumps(data))
    path = camera.load_path_file(file)
    torch.testing.assert_close(path.poses, torch.linalg.inv(c2w[0]) @ c2w, atol=1e-5, rtol=0)
    torch.testing.assert_close(path.fov_deg, torch.full((6,), 50.0))


def test_resampling_keeps_ends_and_rigidity():
    path = camera.preset_path("orbit_right", 120, 45, pivot_distance=2.0, easing="linear")
    short = camera.resample_path(path, 14)
    assert short.num_frames == 14
    torch.testing.assert_close(short.poses[0], path.poses[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(short.poses[-1], path.poses[-1], atol=1e-5, rtol=0)
    r = short.poses[:, :3, :3]
    torch.testing.assert_close(r.transpose(1, 2) @ r, torch.eye(3).expand(14, 3, 3), atol=1e-5, rtol=0)
    # a linear orbit resampled is the same linear orbit
    torch.testing.assert_close(short.poses, camera.preset_path("orbit_right", 14, 45, pivot_distance=2.0,
                                                               easing="linear").poses, atol=1e-4, rtol=0)
