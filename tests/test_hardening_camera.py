"""Camera files and custom paths that are broken, hostile or huge: every importer validates like the
ReCapture camera file (finite, rigid, right-handed poses; a field of view in the config's range), names
the file, frame and field, refuses paths over the named limits before parsing much, and honours Cancel."""

from __future__ import annotations

import json
import math
import time

import pytest

from recapture import camera
from recapture.camera import CameraPathError
from recapture import config
from recapture.config import CameraConfig, PointCloudConfig, setting_of

IDENTITY_3X4 = [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0]
IDENTITY = [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]


def realestate_line(matrix=IDENTITY_3X4, fx=0.8) -> str:
    return " ".join(str(v) for v in [0, fx, 1.4, 0.5, 0.5, 0, 0, *matrix])


def realestate_file(tmp_path, second_line: str):
    """A RealEstate10K file: its URL, a good camera, then the camera under test (line 3)."""
    file = tmp_path / "cameras.txt"
    file.write_text("\n".join(["https://www.youtube.com/watch?v=example", realestate_line(), second_line]))
    return file


NAN_ROW = [float("nan")] + IDENTITY_3X4[1:]
INF_ROW = [float("inf")] + IDENTITY_3X4[1:]
SCALED = [2, 0, 0, 0, 0, 2, 0, 0, 0, 0, 2, 0]
MIRRORED = [-1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0]


@pytest.mark.parametrize("line, words", [
    (realestate_line(NAN_ROW), ["NaN or infinite"]),
    (realestate_line(INF_ROW), ["NaN or infinite"]),
    (realestate_line([0] * 12), ["not a rigid rotation"]),
    (realestate_line(SCALED), ["not a rigid rotation", "det 8"]),
    (realestate_line(MIRRORED), ["not a rigid rotation", "det -1"]),
    (realestate_line(fx=0), ["'fx'", "between 1 and 179"]),
    (realestate_line(fx=-0.5), ["'fx'", "between 1 and 179"]),
    (realestate_line(fx=float("nan")), ["'fx'"]),
    (realestate_line(fx=1e-9), ["'fx'", "between 1 and 179"]),
])
def test_realestate10k_poses_and_focal_lengths_are_validated_naming_file_line_and_field(tmp_path, line, words):
    file = realestate_file(tmp_path, line)
    with pytest.raises(CameraPathError) as caught:
        camera.load_path_file(file)
    message = str(caught.value)
    for word in ["cameras.txt", "line 3", "frame 1", *words]:
        assert word in message, message


def test_realestate10k_pose_errors_are_the_recapture_file_checks():
    """One validation function: the importers say what the ReCapture camera file says."""
    scaled = [[2, 0, 0, 0], [0, 2, 0, 0], [0, 0, 2, 0], [0, 0, 0, 1]]
    with pytest.raises(CameraPathError) as from_json:
        camera.path_from_json({"version": 1, "convention": "opencv", "frames": [{"pose": scaled}]})
    with pytest.raises(CameraPathError) as from_text:
        camera.path_from_realestate10k(realestate_line(SCALED))
    tail = "is not a rigid rotation (R^T R differs from I by 3, det 8): scale, shear or a mirrored axis"
    assert tail in str(from_json.value) and tail in str(from_text.value)


def nerf_file(tmp_path, top: dict, frame: dict | None = None):
    data = {**top, "frames": [{"transform_matrix": IDENTITY}, {"transform_matrix": IDENTITY, **(frame or {})}]}
    file = tmp_path / "transforms.json"
    file.write_text(json.dumps(data))
    return file


@pytest.mark.parametrize("top, frame, words", [
    ({"camera_angle_x": 0}, None, ["'camera_angle_x'", "between 1 and 179", "radians"]),
    ({"camera_angle_x": -1}, None, ["'camera_angle_x'", "between 1 and 179"]),
    ({"camera_angle_x": 100}, None, ["'camera_angle_x'", "between 1 and 179"]),
    ({"camera_angle_x": "abc"}, None, ["'camera_angle_x'", "a number", "'abc'"]),
    ({"camera_angle_x": None}, None, ["'camera_angle_x'", "a number", "None"]),
    ({"camera_angle_x": True}, None, ["'camera_angle_x'", "a number"]),
    ({"fl_x": 0, "w": 640}, None, ["'fl_x'"]),
    ({"fl_x": 500, "w": 0}, None, ["'w'"]),
    ({"fl_x": "x", "w": 640}, None, ["'fl_x'", "a number"]),
    ({"camera_angle_x": 0.8}, {"camera_angle_x": 0}, ["frame 1", "'camera_angle_x'"]),
    ({}, {"transform_matrix": [[float("nan"), 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]},
     ["frame 1", "'transform_matrix'", "NaN or infinite"]),
    ({}, {"transform_matrix": [[3, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]},
     ["frame 1", "'transform_matrix'", "not a rigid rotation"]),
    ({}, {"transform_matrix": [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1], [0, 0, 0, 1]]},
     ["frame 1", "'transform_matrix' must be a 4x4"]),
])
def test_nerf_fields_of_view_and_matrices_are_validated_naming_file_frame_and_field(tmp_path, top, frame, words):
    file = nerf_file(tmp_path, top, frame)
    with pytest.raises(CameraPathError) as caught:
        camera.load_path_file(file)
    message = str(caught.value)
    for word in ["transforms.json", *words]:
        assert word in message, message


def test_the_field_of_view_range_is_the_configs():
    fov = setting_of(PointCloudConfig, "fov_deg")
    assert (fov.min, fov.max) == (1.0, 179.0)
    good = {"version": 1, "convention": "opencv", "frames": [{"pose": IDENTITY, "fov_deg": fov.max}]}
    assert camera.path_from_json(good).fov_deg.tolist() == [fov.max]
    with pytest.raises(CameraPathError, match="'fov_deg' must be a number of degrees between 1 and 179"):
        camera.path_from_json({**good, "frames": [{"pose": IDENTITY, "fov_deg": math.nextafter(fov.max, 180)}]})


DEEP = '{"version": 1, "convention": "opencv", "frames": ' + "[" * 100_000 + "]" * 100_000 + "}"


def test_deeply_nested_json_is_named_not_a_recursion_error(tmp_path):
    file = tmp_path / "deep.json"
    file.write_text(DEEP)
    with pytest.raises(CameraPathError, match="deep.json is nested too deeply"):
        camera.load_path_file(file)
    with pytest.raises(CameraPathError, match="custom_path is nested too deeply.*clear custom_path"):
        camera.choose_camera_path("orbit_left", 20.0, "linear", 14, 1.0, custom_path=DEEP)


def test_a_file_that_is_not_utf8_is_named(tmp_path):
    for name, data in [("latin.json", b'{"version": 1, "convention": "opencv", "caf\xe9": 1}'),
                       ("latin.txt", b"caf\xe9\n" + realestate_line().encode())]:
        file = tmp_path / name
        file.write_bytes(data)
        with pytest.raises(CameraPathError, match=f"{name} is not UTF-8 text .*byte 0xe9.*save it as UTF-8"):
            camera.load_path_file(file)


def long_custom_path(cameras: int) -> str:
    return json.dumps({"version": 1, "convention": "opencv", "frames": [{"pose": IDENTITY}] * cameras})


def test_the_path_length_limit_is_the_frame_counts_maximum():
    """A path baked into custom_path at the largest frame count always fits."""
    assert config.MAX_PATH_CAMERAS == setting_of(CameraConfig, "frames").max
    assert len(long_custom_path(config.MAX_PATH_CAMERAS)) < config.MAX_PATH_BYTES


def test_a_path_over_the_limit_is_refused_before_it_is_validated(tmp_path):
    text = long_custom_path(config.MAX_PATH_CAMERAS + 1)
    start = time.monotonic()
    with pytest.raises(CameraPathError, match=f"custom_path: {config.MAX_PATH_CAMERAS + 1} cameras.*at most "
                                              f"{config.MAX_PATH_CAMERAS}"):
        camera.choose_camera_path("orbit_left", 20.0, "linear", 14, 1.0, custom_path=text)
    assert time.monotonic() - start < 5  # before the per-camera checks (seconds for 10k cameras before)

    nerf = tmp_path / "transforms.json"
    nerf.write_text(json.dumps({"camera_angle_x": 0.8, "frames": [{"transform_matrix": IDENTITY}]
                                * (config.MAX_PATH_CAMERAS + 1)}))
    with pytest.raises(CameraPathError, match=f"transforms.json: {config.MAX_PATH_CAMERAS + 1} cameras"):
        camera.load_path_file(nerf)
    txt = tmp_path / "cameras.txt"
    txt.write_text("\n".join([realestate_line()] * (config.MAX_PATH_CAMERAS + 1)))
    with pytest.raises(CameraPathError, match=f"cameras.txt: more than {config.MAX_PATH_CAMERAS} cameras"):
        camera.load_path_file(txt)


def test_text_over_the_size_limit_is_refused_before_parsing(tmp_path):
    """The report's case: 150k cameras (10 MB) in custom_path ran 29 s after Cancel."""
    huge = long_custom_path(150_000)
    assert len(huge) > config.MAX_PATH_BYTES
    start = time.monotonic()
    with pytest.raises(CameraPathError, match=r"custom_path is \d+\.\d MB.*at most \d+ MB.*fewer cameras"):
        camera.choose_camera_path("orbit_left", 20.0, "linear", 14, 1.0, custom_path=huge)
    assert time.monotonic() - start < 1
    file = tmp_path / "huge.json"
    file.write_text(huge)
    with pytest.raises(CameraPathError, match=r"huge.json is \d+\.\d MB"):
        camera.load_path_file(file)


class Cancelled(Exception):
    pass


def cancel_after(calls: int):
    seen = []

    def check_cancel():
        seen.append(1)
        if len(seen) >= calls:
            raise Cancelled
    check_cancel.seen = seen
    return check_cancel


def test_cancel_is_checked_while_a_long_path_is_parsed(tmp_path):
    cameras = config.MAX_PATH_CAMERAS
    check = cancel_after(3)
    with pytest.raises(Cancelled):
        camera.choose_camera_path("orbit_left", 20.0, "linear", 14, 1.0, custom_path=long_custom_path(cameras),
                                  check_cancel=check)
    assert len(check.seen) == 3

    txt = tmp_path / "cameras.txt"
    txt.write_text("\n".join([realestate_line()] * cameras))
    check = cancel_after(3)
    with pytest.raises(Cancelled):
        camera.choose_camera_path("orbit_left", 20.0, "linear", 14, 1.0, camera_file=txt, check_cancel=check)
    assert len(check.seen) == 3

    check = cancel_after(10**9)  # never cancels: the path is read as without it
    choice = camera.choose_camera_path("orbit_left", 20.0, "linear", 14, 1.0, camera_file=txt, check_cancel=check)
    assert choice.path.num_frames == 14 and choice.source == "file" and check.seen


def test_a_deeply_nested_file_in_the_input_folder_does_not_break_the_camera_file_list(tmp_path):
    file = tmp_path / "deep.json"
    file.write_text(DEEP)
    assert camera.is_camera_file(file)  # listed; loading it says what is wrong
