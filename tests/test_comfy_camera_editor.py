"""The camera editor's server side in a real ComfyUI: the preset route, the custom_path input and the
ui data the editor draws after a run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import requests
import torch

from comfy_harness import execution_error
from recapture import camera
from recapture.demo_clip import write_demo_clip

pytestmark = pytest.mark.comfy

NO_FILE = "(none: use the preset)"
REQUEST = {"preset": "orbit_left", "amount": 30.0, "easing": "linear", "frames": 9, "pivot_distance": 2.5,
           "camera_file": NO_FILE, "custom_path": "", "fov_deg": 60.0}
PATH_FILE = "editor_route_orbit.json"  # in the server's input folder: 30 cameras orbiting right
BAD_FILE = "editor_route_bad.json"


def post_path(comfy, body) -> requests.Response:
    return requests.post(comfy.url + "/recapture/camera_path", data=body if isinstance(body, str) else json.dumps(body),
                         timeout=30)


def poses_of(camera_json: dict) -> torch.Tensor:
    return torch.tensor([f["pose"] for f in camera_json["frames"]])


@pytest.fixture(scope="module")
def path_files(comfy):
    """A good and a malformed camera file in the server's input folder, as a user puts them there."""
    inputs = comfy.base / "input"
    camera.save_path_json(camera.preset_path("orbit_right", 30, 40.0, pivot_distance=2.0, easing="ease_in"),
                          inputs / PATH_FILE)
    (inputs / BAD_FILE).write_text(json.dumps({"version": 1, "convention": "opencv", "frames": [{"pose": [[1, 0]]}]}))
    return inputs / PATH_FILE


def test_route_returns_the_library_preset_as_a_camera_file(comfy):
    r = post_path(comfy, REQUEST)
    assert r.status_code == 200, r.text
    data = r.json()
    assert data["source"] == "preset" and data["pivot_distance"] == 2.5
    assert data["description"] == "orbit_left 30, 9 frames"
    expected = camera.preset_path("orbit_left", 9, 30.0, pivot_distance=2.5, easing="linear")
    path = data["path"]
    assert path["version"] == 1 and path["convention"] == "opencv" and len(path["frames"]) == 9
    poses = poses_of(path)
    assert torch.allclose(poses, expected.poses, atol=1e-5)
    assert poses[-1, 0, 3] < -0.5  # orbit_left moves the camera to -x
    zoom = post_path(comfy, {**REQUEST, "preset": "zoom_in", "amount": 50.0}).json()
    assert zoom["path"]["frames"][-1]["fov_deg"] < 60.0


def test_route_draws_an_automatic_pivot_with_the_last_runs_or_a_stand_in(comfy):
    before_a_run = post_path(comfy, {**REQUEST, "pivot_distance": 0.0}).json()
    assert before_a_run["pivot_distance"] == 1.0
    assert before_a_run["description"].endswith("(pivot 1, a stand-in until the node runs with a point cloud)")
    after_a_run = post_path(comfy, {**REQUEST, "pivot_distance": 0.0, "stand_in_pivot": 3.25}).json()
    assert after_a_run["pivot_distance"] == 3.25
    assert after_a_run["description"].endswith("(pivot 3.25, from the last run's depth)")
    expected = camera.preset_path("orbit_left", 9, 30.0, pivot_distance=3.25, easing="linear")
    assert torch.allclose(poses_of(after_a_run["path"]), expected.poses, atol=1e-5)


def test_route_returns_the_camera_file_resampled_and_custom_path_over_it(comfy, path_files):
    r = post_path(comfy, {**REQUEST, "camera_file": PATH_FILE})
    assert r.status_code == 200, r.text
    data = r.json()
    assert data["source"] == "file" and data["pivot_distance"] == 2.5
    assert data["description"] == f"camera file {PATH_FILE} replaces the preset: 30 cameras, resampled to 9 frames"
    expected = camera.resample_path(camera.load_path_file(path_files), 9)
    poses = poses_of(data["path"])
    assert torch.allclose(poses, expected.poses, atol=1e-5)
    assert poses[-1, 0, 3] > 0.5  # the file orbits right, the preset would go left

    truck = camera.path_to_json(camera.preset_path("truck_right", 3, 50.0, pivot_distance=2.0, easing="linear"))
    custom = post_path(comfy, {**REQUEST, "camera_file": PATH_FILE, "custom_path": json.dumps(truck)}).json()
    assert custom["source"] == "custom" and custom["description"].startswith("custom path active")
    assert [f["pose"][0][3] for f in custom["path"]["frames"]] == pytest.approx([i / 8 for i in range(9)], abs=1e-5)


@pytest.mark.parametrize("body, words", [
    ({**REQUEST, "preset": "spin"}, ["unknown camera preset", "orbit_left"]),
    ({**REQUEST, "easing": "bouncy"}, ["unknown easing"]),
    ({**REQUEST, "frames": 0}, ["'frames'", "between 1"]),
    ({**REQUEST, "frames": 2.5}, ["'frames'", "whole number"]),
    ({**REQUEST, "amount": "lots"}, ["'amount'", "number"]),
    ({**REQUEST, "pivot_distance": -1}, ["'pivot_distance'", "between 0"]),
    ({**REQUEST, "fov_deg": 0}, ["'fov_deg'", "between 1"]),
    ({**REQUEST, "custom_path": "{oops"}, ["custom_path is not valid JSON", "clear custom_path"]),
    ({**REQUEST, "camera_file": "../" + PATH_FILE}, ["outside ComfyUI's input folder", "pick a file"]),
    ({**REQUEST, "camera_file": "/etc/hostname"}, ["outside ComfyUI's input folder"]),
    ({**REQUEST, "camera_file": "no_such_path.json"}, ["no_such_path.json does not exist"]),
    ({**REQUEST, "camera_file": BAD_FILE}, ["frame 0: 'pose' must be a 4x4"]),
    ({**REQUEST, "camera_file": 7}, ["'camera_file' must be a file name"]),
    ("{not json", ["body must be JSON"]),
    ([1, 2], ["JSON object"]),
])
def test_route_refuses_bad_values_with_a_json_message(comfy, path_files, body, words):
    r = post_path(comfy, body)
    assert r.status_code == 400, r.text
    message = r.json()["error"]
    for word in words:
        assert word in message, message


@pytest.fixture(scope="module")
def sample(comfy):
    files = write_demo_clip(comfy.base / "input", num_frames=14)
    return json.loads(files[-1].read_text())


def anchor_graph(sample: dict, **trajectory) -> dict:
    video = {"video": "recapture_sample.mp4", "start_frame": 0, "frame_count": 5, "every_nth": 1,
             "width": 256, "height": 128, "resize": "crop"}
    return {
        "1": {"class_type": "ReCaptureLoadVideo", "inputs": {**video, "frames_folder": "(none: use the video)"}},
        "2": {"class_type": "ReCaptureLoadVideo", "inputs": {**video, "frames_folder": "recapture_sample_depth/"}},
        "3": {"class_type": "ReCaptureDepthToPointCloud", "inputs": {
            "frames": ["1", 0], "depth": ["2", 0], "depth_kind": "inverse", "near": sample["near"], "far": sample["far"],
            "fov_deg": 60.0, "edge_threshold": 0.04, "preview_points": 5000}},
        "4": {"class_type": "ReCaptureCameraTrajectory", "inputs": {
            "preset": "orbit_left", "amount": 15.0, "easing": "linear", "frames": 14, "pivot_distance": 0.0,
            "camera_file": "(none: use the preset)", "point_cloud": ["3", 0], **trajectory}},
        "5": {"class_type": "PreviewAny", "inputs": {"source": ["4", 1]}},
    }


def test_custom_path_replaces_the_preset_and_is_resampled(comfy, sample):
    truck = camera.path_to_json(camera.preset_path("truck_right", 3, 50.0, pivot_distance=2.0, easing="linear"))
    entry = comfy.run(anchor_graph(sample, custom_path=json.dumps(truck)))
    path = json.loads(entry["outputs"]["5"]["text"][0])
    assert len(path["frames"]) == 5  # resampled to the clip's frame count
    x = [f["pose"][0][3] for f in path["frames"]]
    assert x == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0], abs=1e-5)  # the custom truck, not the orbit preset
    assert all(abs(f["pose"][0][2]) < 1e-6 for f in path["frames"])  # no rotation: not an orbit


def test_the_node_renders_the_camera_file_the_route_returns(comfy, sample, path_files):
    """With a camera file picked, the node and the editor's route give the same path (not the preset)."""
    entry = comfy.run(anchor_graph(sample, camera_file=PATH_FILE))
    path = json.loads(entry["outputs"]["5"]["text"][0])
    editor = entry["outputs"]["4"]["recapture_camera"][0]
    assert editor["source"] == "file" and editor["description"].startswith(f"camera file {PATH_FILE} replaces")
    route = post_path(comfy, {**REQUEST, "preset": "orbit_left", "amount": 15.0, "frames": 5, "pivot_distance": 0.0,
                              "camera_file": PATH_FILE, "stand_in_pivot": editor["pivot_distance"]}).json()
    assert route["source"] == "file"
    assert torch.allclose(poses_of(route["path"]), poses_of(path), atol=1e-6)
    expected = camera.resample_path(camera.load_path_file(path_files), 5)
    assert torch.allclose(poses_of(path), expected.poses, atol=1e-5)


def test_empty_custom_path_keeps_the_preset_and_the_ui_data_has_the_points(comfy, sample):
    entry = comfy.run(anchor_graph(sample, custom_path=""))
    path = json.loads(entry["outputs"]["5"]["text"][0])
    assert path["frames"][-1]["pose"][0][3] < 0  # orbit_left
    editor = entry["outputs"]["4"]["recapture_camera"][0]
    assert editor["path"] == path
    assert editor["pivot_distance"] > 0 and editor["aspect"] == pytest.approx(2.0)
    assert editor["source"] == "preset"
    assert editor["description"] == f"orbit_left 15, 5 frames (pivot {editor['pivot_distance']:.3g}, from the depth)"
    points = editor["points"]
    assert 1_000 < points["count"] <= 30_000
    r = requests.get(comfy.url + "/view", params={k: points[k] for k in ("filename", "subfolder", "type")}, timeout=30)
    assert r.status_code == 200 and len(r.content) == points["count"] * 15
    xyz = np.frombuffer(r.content[: points["count"] * 12], dtype="<f4").reshape(-1, 3)
    rgb = np.frombuffer(r.content[points["count"] * 12:], dtype=np.uint8).reshape(-1, 3)
    assert (xyz[:, 2] > 0).all()  # in front of the source camera (OpenCV: +z forward)
    assert rgb.std() > 5  # real colours, not one flat value


@pytest.mark.parametrize("text, words", [
    ("{oops", ["custom_path", "not valid JSON", "clear custom_path"]),
    (json.dumps({"version": 1, "convention": "opengl", "frames": []}), ["custom_path", "convention"]),
])
def test_bad_custom_path_names_the_input_and_the_fix(comfy, sample, text, words):
    entry = comfy.wait(comfy.queue(anchor_graph(sample, custom_path=text)))
    assert entry["status"]["status_str"] == "error"
    message = execution_error(entry)
    for word in words:
        assert word in message, message
