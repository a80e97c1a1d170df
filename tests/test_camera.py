"""Camera paths: preset geometry, the camera file, importers, and which path a trajectory node renders."""

from __future__ import annotations

import json
import math
import re

import pytest
import torch

from recapture import camera
from recapture.camera import CameraPathError
from recapture.pointcloud import make_point_cloud
from recapture.types import CameraPath, PointCloud


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


# --- Which path a Camera Trajectory node renders ---------------------------------------------------
WIDGETS = dict(preset="orbit_left", amount=20.0, easing="linear", frames=6, pivot_distance=2.0)


def flat_cloud(frames: int = 5, centre: float = 2.0, rest: float = 8.0, fov_deg: float = 50.0) -> PointCloud:
    """A metric cloud of ``frames`` 40x60 frames: depth ``centre`` in the middle, ``rest`` around it."""
    depth = torch.full((frames, 40, 60), rest)
    depth[:, 15:25, 25:35] = centre
    return make_point_cloud(torch.rand(frames, 40, 60, 3), depth, kind="metric", fov_deg=fov_deg)


def two_files(tmp_path):
    """A truck path of 4 cameras in a file and a pedestal path of 3 as custom_path text."""
    file = camera.save_path_json(camera.preset_path("truck_right", 4, 50, pivot_distance=2.0), tmp_path / "truck.json")
    text = json.dumps(camera.path_to_json(camera.preset_path("pedestal_up", 3, 50, pivot_distance=2.0)))
    return file, text


def test_custom_path_wins_over_the_camera_file_which_wins_over_the_preset(tmp_path):
    file, text = two_files(tmp_path)
    preset = camera.choose_camera_path(**WIDGETS)
    assert preset.source == "preset" and preset.pivot_distance == 2.0 and preset.source_fov_deg == 60.0
    assert preset.description == "orbit_left 20, 6 frames"
    torch.testing.assert_close(preset.path.poses, camera.preset_path(
        "orbit_left", 6, 20.0, pivot_distance=2.0, easing="linear").poses, atol=0, rtol=0)

    chosen = camera.choose_camera_path(**WIDGETS, camera_file=file, custom_path=" \n ")  # blank: no custom path
    assert chosen.source == "file"
    assert chosen.description == "camera file truck.json replaces the preset: 4 cameras, resampled to 6 frames"
    torch.testing.assert_close(chosen.path.poses, camera.resample_path(camera.load_path_file(file), 6).poses,
                               atol=0, rtol=0)
    assert centres(chosen.path)[-1, 0] == pytest.approx(1.0)  # the truck, not the orbit

    custom = camera.choose_camera_path(**WIDGETS, camera_file=file, custom_path=text)
    assert custom.source == "custom" and custom.path.num_frames == 6
    assert custom.description == "custom path active (Clear to use the preset): 3 cameras, resampled to 6 frames"
    expected = camera.resample_path(camera.path_from_json_text(text, "custom_path"), 6)
    torch.testing.assert_close(custom.path.poses, expected.poses, atol=0, rtol=0)
    assert centres(custom.path)[-1, 1] == pytest.approx(-1.0)  # the pedestal, not the truck


def test_a_file_or_custom_path_ignores_the_preset_widgets_and_keeps_its_length(tmp_path):
    file, text = two_files(tmp_path)
    # the command line has no preset when it reads a file
    chosen = camera.choose_camera_path(None, None, None, 4, 0.0, camera_file=file)
    assert chosen.source == "file" and chosen.pivot_distance is None  # automatic, no cloud: unknown
    assert chosen.description == "camera file truck.json replaces the preset: 4 cameras"
    assert torch.equal(chosen.path.poses, camera.load_path_file(file).poses)
    assert camera.choose_camera_path("spin", "lots", "bounce", 3, 0.0, custom_path=text).source == "custom"


def test_a_point_cloud_sets_the_frame_count_the_automatic_pivot_and_the_field_of_view():
    cloud = flat_cloud(frames=5, centre=2.0, fov_deg=50.0)
    chosen = camera.choose_camera_path(**{**WIDGETS, "pivot_distance": 0.0, "frames": 14}, cloud=cloud)
    assert chosen.path.num_frames == 5 and chosen.pivot_distance == pytest.approx(2.0)
    assert chosen.source_fov_deg == pytest.approx(50.0, abs=1e-3)
    assert chosen.description == "orbit_left 20, 5 frames (pivot 2, from the depth)"
    torch.testing.assert_close(chosen.path.poses, camera.preset_path(
        "orbit_left", 5, 20.0, pivot_distance=2.0, easing="linear").poses)
    # a pivot that is set wins over the depth
    assert camera.choose_camera_path(**{**WIDGETS, "pivot_distance": 3.5}, cloud=cloud).pivot_distance == 3.5
    # zoom uses the source field of view: the cloud's, or one given explicitly (the command line's --fov)
    zoom = {**WIDGETS, "preset": "zoom_in", "amount": 100.0}
    assert camera.choose_camera_path(**zoom, cloud=cloud).path.fov_deg[-1] == pytest.approx(
        math.degrees(2 * math.atan(math.tan(math.radians(25)) / 2)), abs=1e-3)
    assert camera.choose_camera_path(**zoom, cloud=cloud, source_fov_deg=70.0).path.fov_deg[-1] == pytest.approx(
        math.degrees(2 * math.atan(math.tan(math.radians(35)) / 2)), abs=1e-3)


def test_an_automatic_pivot_without_a_cloud_is_refused_or_drawn_with_the_stand_in(tmp_path):
    automatic = {**WIDGETS, "pivot_distance": 0.0}
    with pytest.raises(CameraPathError) as error:
        camera.choose_camera_path(**automatic)
    assert str(error.value) == ("pivot_distance is 0 (automatic) but no point cloud gives the subject's distance: "
                                "connect the point cloud or set pivot_distance")
    drawn = camera.choose_camera_path(**automatic, stand_in_pivot=1.0)
    assert drawn.pivot_distance == 1.0
    assert drawn.description == "orbit_left 20, 6 frames (pivot 1, a stand-in until the node runs with a point cloud)"
    last = camera.choose_camera_path(**automatic, stand_in_pivot=2.5, stand_in_note="from the last run's depth")
    assert last.description.endswith("(pivot 2.5, from the last run's depth)")
    torch.testing.assert_close(last.path.poses, camera.preset_path(
        "orbit_left", 6, 20.0, pivot_distance=2.5, easing="linear").poses, atol=0, rtol=0)
    # a cloud without valid depth: the preset cannot place the pivot, a file does not need it
    empty = PointCloud(colors=torch.zeros(3, 4, 4, 3), depth=torch.zeros(3, 4, 4),
                       intrinsics=torch.tensor([[2.0, 0, 2], [0, 2, 2], [0, 0, 1]]).expand(3, 3, 3))
    with pytest.raises(CameraPathError, match="no valid value"):
        camera.choose_camera_path(**automatic, cloud=empty, stand_in_pivot=1.0)
    file, _ = two_files(tmp_path)
    chosen = camera.choose_camera_path(**automatic, cloud=empty, camera_file=file)
    assert chosen.path.num_frames == 3 and chosen.pivot_distance is None


@pytest.mark.parametrize("change, message", [
    ({"preset": "spin"}, "unknown camera preset 'spin': use one of static, orbit_left"),
    ({"easing": "bounce"}, "unknown easing 'bounce'"),
    ({"frames": 0}, "'frames' must be between 1 and 10000, got 0"),
    ({"frames": 2.5}, "'frames' must be a whole number, got 2.5"),
    ({"frames": float("nan")}, "'frames' must be between 1 and 10000"),
    ({"amount": "lots"}, "'amount' must be a number, got 'lots'"),
    ({"amount": 4000}, "'amount' must be between -3600 and 3600"),
    ({"pivot_distance": -1}, "'pivot_distance' must be between 0 and 100000, got -1"),
    ({"pivot_distance": True}, "'pivot_distance' must be a number"),
    ({"source_fov_deg": 200}, "'fov_deg' must be between 1 and 179"),
    ({"custom_path": 5}, "'custom_path' must be text"),
    ({"custom_path": "{oops"}, "custom_path is not valid JSON"),
    ({"camera_file": "missing.json"}, "camera file missing.json does not exist"),
])
def test_bad_widget_values_are_named(change, message):
    with pytest.raises(CameraPathError, match=re.escape(message)):
        camera.choose_camera_path(**{**WIDGETS, **change})


def test_the_choice_is_frozen():
    chosen = camera.choose_camera_path(**WIDGETS)
    with pytest.raises(AttributeError):
        chosen.source = "file"
