"""The 3D camera-path editor on Camera Trajectory nodes, in the real frontend with real WebGL (SwiftShader).

Pixels are read back from each editor's own canvas, so a blank or unchanged view fails the test.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from comfy_harness import REPO
from recapture import camera
from browser_pages import changed, pack_console_errors, pixels, set_widget, wait_status

pytestmark = pytest.mark.browser

NODE = "ReCaptureCameraTrajectory"
NO_FILE = "(none: use the preset)"
CAMERA_FILE = "editor_browser_orbit.json"  # written into the server's input folder by the camera_file fixture
def add_node(page, node_id: int, pos: tuple[int, int], **widgets) -> None:
    page.evaluate("""([id, pos, widgets]) => {
      const n = LiteGraph.createNode('%s'); n.id = id; window.app.graph.add(n); n.pos = pos;
      for (const [k, v] of Object.entries(widgets)) n.widgets.find(w => w.name === k).value = v;
      window.app.graph.setDirtyCanvas(true, true);
    }""" % NODE, [node_id, list(pos), widgets])


def fresh_graph(page) -> None:
    page.evaluate("""() => { const app = window.app; app.graph.clear(); app.canvas.ds.scale = 1;
      app.canvas.ds.offset = [0, 0]; app.graph.setDirtyCanvas(true, true); }""")


def test_editor_draws_the_path_and_follows_preset_amount_and_scrubber(canvas, artifacts):
    fresh_graph(canvas)
    add_node(canvas, 1, (120, 120), preset="orbit_left", amount=20.0, pivot_distance=2.0)
    wait_status(canvas, 1, "orbit_left 20")
    first = pixels(canvas, 1)
    canvas.screenshot(path=str(artifacts / "camera_editor_orbit.png"))
    assert first["w"] > 200 and first["h"] > 150
    assert first["drawn"] > 800 and first["distinct"] > 12, {k: first[k] for k in ("drawn", "distinct")}
    assert first["white"] > 20 and first["green"] > 20  # the source camera and the scrubbed frame both show

    set_widget(canvas, 1, "preset", "pedestal_up")
    wait_status(canvas, 1, "pedestal_up 20")
    pedestal = pixels(canvas, 1)
    assert changed(first, pedestal) > 100

    set_widget(canvas, 1, "amount", 80.0)
    wait_status(canvas, 1, "pedestal_up 80")
    more = pixels(canvas, 1)
    assert changed(pedestal, more) > 100
    canvas.screenshot(path=str(artifacts / "camera_editor_pedestal.png"))

    # scrubbing to the last frame moves the green camera
    canvas.evaluate("""() => { const e = window.app.graph.getNodeById(1).recaptureEditor;
      e.scrubber.value = e.scrubber.max; e.scrubber.dispatchEvent(new Event('input')); }""")
    canvas.wait_for_timeout(300)
    scrubbed = pixels(canvas, 1)
    assert canvas.evaluate("() => window.app.graph.getNodeById(1).recaptureEditor.selected") == 13
    assert changed(more, scrubbed) > 20

    # a bad value is reported in the editor, not thrown
    set_widget(canvas, 1, "frames", 0)
    wait_status(canvas, 1, "frames must be between 1 and 10000, got 0")
    assert pack_console_errors(canvas.messages) == []


def test_editor_is_not_saved_as_a_widget_value_and_custom_path_round_trips(canvas, artifacts):
    fresh_graph(canvas)
    add_node(canvas, 1, (120, 120), preset="dolly_in", amount=40.0, pivot_distance=3.0, frames=9)
    wait_status(canvas, 1, "dolly_in 40")
    canvas.evaluate("() => window.app.graph.getNodeById(1).recaptureEditor.bakeButton.click()")
    wait_status(canvas, 1, "custom path active (Clear to use the preset): 9 cameras")
    baked = canvas.evaluate("() => window.app.graph.getNodeById(1).widgets.find(w => w.name === 'custom_path').value")
    path = json.loads(baked)
    assert len(path["frames"]) == 9 and path["frames"][-1]["pose"][2][3] == pytest.approx(1.2, abs=1e-4)
    before = pixels(canvas, 1)
    # with a custom path the preset no longer drives the drawing
    set_widget(canvas, 1, "preset", "orbit_right")
    canvas.wait_for_timeout(800)
    assert canvas.evaluate("() => window.app.graph.getNodeById(1).recaptureEditor.pathSource") == "custom"
    assert changed(before, pixels(canvas, 1)) == 0

    saved = canvas.evaluate("() => JSON.parse(JSON.stringify(window.app.graph.serialize()))")
    node = next(n for n in saved["nodes"] if n["type"] == NODE)
    assert node["widgets_values"][-1] == baked and len(node["widgets_values"]) == 7  # no editor value
    fresh_graph(canvas)
    canvas.evaluate("async (wf) => { await window.app.loadGraphData(wf); }", saved)
    wait_status(canvas, 1, "custom path active (Clear to use the preset): 9 cameras")
    reloaded = canvas.evaluate("() => window.app.graph.getNodeById(1).widgets.find(w => w.name === 'custom_path').value")
    assert reloaded == baked
    prompt = canvas.evaluate("async () => (await window.app.graphToPrompt()).output")
    assert prompt["1"]["inputs"]["custom_path"] == baked and "camera_editor" not in prompt["1"]["inputs"]

    canvas.evaluate("() => window.app.graph.getNodeById(1).recaptureEditor.clearButton.click()")
    wait_status(canvas, 1, "orbit_right 40")
    set_widget(canvas, 1, "custom_path", "{not json")
    wait_status(canvas, 1, "custom_path is not valid JSON")  # the server's message, as the node would say
    canvas.screenshot(path=str(artifacts / "camera_editor_bad_custom_path.png"))
    assert canvas.evaluate("() => window.app.graph.getNodeById(1).recaptureEditor.path") is None
    # the browser logs the route's HTTP 400 for the bad custom path itself; nothing else of ours may be
    assert [m for m in pack_console_errors(canvas.messages) if "/recapture/camera_path" not in m["url"]] == []


def test_two_trajectory_nodes_each_draw_their_own_path(canvas, artifacts):
    fresh_graph(canvas)
    add_node(canvas, 1, (100, 120), preset="orbit_left", amount=30.0, pivot_distance=2.0)
    add_node(canvas, 2, (560, 120), preset="truck_right", amount=60.0, pivot_distance=2.0)
    wait_status(canvas, 1, "orbit_left 30")
    wait_status(canvas, 2, "truck_right 60")
    a, b = pixels(canvas, 1), pixels(canvas, 2)
    canvas.screenshot(path=str(artifacts / "camera_editor_two_nodes.png"))
    assert a["drawn"] > 800 and b["drawn"] > 800
    assert changed(a, b) > 100
    assert canvas.evaluate("""() => { const [x, y] = [1, 2].map(i => window.app.graph.getNodeById(i).recaptureEditor);
      return x !== y && x.canvas !== y.canvas && x.renderer !== y.renderer; }""")
    # changing one leaves the other alone
    set_widget(canvas, 1, "amount", -30.0)
    wait_status(canvas, 1, "orbit_left -30")
    assert changed(b, pixels(canvas, 2)) == 0
    assert pack_console_errors(canvas.messages) == []


def test_running_the_anchor_workflow_shows_the_point_cloud_and_the_anchor_preview(canvas, comfy, artifacts):
    from recapture.demo_clip import write_demo_clip

    write_demo_clip(comfy.base / "input", num_frames=14)
    workflow = json.loads((REPO / "workflows" / "ReCapture - anchor video and mask.json").read_text())
    canvas.evaluate("async (wf) => { await window.app.loadGraphData(wf); }", workflow)
    trajectory = canvas.evaluate("() => window.app.graph._nodes.find(n => n.type === '%s').id" % NODE)
    render = canvas.evaluate("() => window.app.graph._nodes.find(n => n.type === 'ReCaptureRenderAnchor').id")
    wait_status(canvas, trajectory, "orbit_left 15")
    # the editor only, large and centred, so its pixels and the screenshot show the scene
    canvas.evaluate("""(id) => { const app = window.app, n = app.graph.getNodeById(id);
      app.canvas.ds.scale = 1; app.canvas.ds.offset = [300 - n.pos[0], 120 - n.pos[1]];
      app.graph.setDirtyCanvas(true, true); }""", trajectory)
    canvas.wait_for_timeout(500)
    before = pixels(canvas, trajectory)
    assert canvas.evaluate("(id) => window.app.graph.getNodeById(id).recaptureEditor.pointCount", trajectory) == 0

    canvas.evaluate("async () => { await window.app.queuePrompt(0, 1); }")
    canvas.wait_for_function("(id) => window.app.graph.getNodeById(id).recaptureEditor.pointCount > 0",
                             arg=trajectory, timeout=300_000)
    canvas.wait_for_timeout(500)
    after = pixels(canvas, trajectory)
    canvas.screenshot(path=str(artifacts / "camera_editor_after_run.png"))
    count = canvas.evaluate("(id) => window.app.graph.getNodeById(id).recaptureEditor.pointCount", trajectory)
    assert 1_000 < count <= 30_000
    assert after["drawn"] > before["drawn"] + 2_000 and after["distinct"] > before["distinct"]
    # with the point cloud known, the pivot comes from the depth
    assert "from the last run's depth" in canvas.evaluate(
        "(id) => window.app.graph.getNodeById(id).recaptureEditor.status", trajectory)
    # Render Anchor's player: the anchor frames, and the mask overlay toggle switches the picture
    canvas.wait_for_function("(id) => window.app.graph.getNodeById(id).recapturePlayer.frames.length === 14",
                             arg=render, timeout=60_000)
    canvas.evaluate("""(id) => { const app = window.app, n = app.graph.getNodeById(id);
      app.canvas.ds.offset = [300 - n.pos[0], 120 - n.pos[1]]; app.graph.setDirtyCanvas(true, true);
      const p = n.recapturePlayer; p.pause(); p.show(13); }""", render)
    canvas.wait_for_function("(id) => window.app.graph.getNodeById(id).recapturePlayer.image.complete", arg=render)
    plain = player_pixels(canvas, render)
    canvas.screenshot(path=str(artifacts / "anchor_player.png"))
    canvas.evaluate("""(id) => { const c = window.app.graph.getNodeById(id).recapturePlayer.checkbox;
      c.checked = true; c.dispatchEvent(new Event('change')); }""", render)
    canvas.wait_for_function("""(id) => { const p = window.app.graph.getNodeById(id).recapturePlayer;
      return p.image.src.includes(p.overlay[13].split('filename=')[1].split('&')[0]) && p.image.complete; }""",
                             arg=render)
    overlay = player_pixels(canvas, render)
    canvas.screenshot(path=str(artifacts / "anchor_player_overlay.png"))
    assert plain["w"] > 0 and overlay["magenta"] > plain["magenta"] + 200, (plain["magenta"], overlay["magenta"])
    # the toggle is saved with the workflow
    saved = canvas.evaluate("(id) => window.app.graph.serialize().nodes.find(n => n.id === id).properties", render)
    assert saved["recapture_mask_overlay"] is True
    assert pack_console_errors(canvas.messages) == []


def player_pixels(page, node_id: int) -> dict:
    """Size of the player's current picture and its count of hole-paint (magenta-red) pixels."""
    return page.evaluate("""(id) => {
      const img = window.app.graph.getNodeById(id).recapturePlayer.image;
      const c = document.createElement('canvas'); c.width = img.naturalWidth; c.height = img.naturalHeight;
      const ctx = c.getContext('2d'); ctx.drawImage(img, 0, 0);
      const d = ctx.getImageData(0, 0, c.width, c.height).data;
      let magenta = 0;
      for (let i = 0; i < d.length; i += 4) if (d[i] > d[i + 1] + 80 && d[i + 2] > d[i + 1] + 20) magenta++;
      return {w: c.width, h: c.height, magenta};
    }""", node_id)


def test_the_node_works_when_the_3d_view_cannot_load(canvas, artifacts):
    """three.js blocked (as with a broken install or a proxy): the editor says so, warns once in the
    console, and the node still edits, saves and converts to a prompt."""
    canvas.route("**/lib/three/three.module.mjs", lambda route: route.abort())
    fresh_graph(canvas)
    add_node(canvas, 1, (100, 120), preset="orbit_left", amount=10.0, pivot_distance=2.0)
    add_node(canvas, 2, (560, 120), preset="dolly_in", amount=10.0, pivot_distance=2.0)
    wait_status(canvas, 1, "3D view unavailable")
    wait_status(canvas, 2, "3D view unavailable")
    wait_status(canvas, 1, "orbit_left 10")  # the path still loads; only the drawing is missing
    set_widget(canvas, 1, "preset", "pan_left")
    wait_status(canvas, 1, "pan_left 10")
    canvas.screenshot(path=str(artifacts / "camera_editor_unavailable.png"))
    warnings = [m for m in canvas.messages if m["type"] == "warning" and "[ReCapture] camera editor" in m["text"]]
    assert len(warnings) == 1, warnings
    prompt = canvas.evaluate("async () => (await window.app.graphToPrompt()).output")
    assert prompt["1"]["inputs"]["preset"] == "pan_left" and prompt["2"]["inputs"]["custom_path"] == ""
    # the blocked request itself is logged by the browser; nothing else of ours may be
    assert [m for m in pack_console_errors(canvas.messages) if "three.module.mjs" not in m["url"]] == []


def test_dragging_the_keyframe_gizmo_writes_a_smooth_custom_path(canvas, artifacts):
    """A person drags the highlighted camera's gizmo with the mouse: the path bends smoothly around that
    frame, the ends stay, and the result lands in custom_path (so it is saved and sent with the prompt)."""
    fresh_graph(canvas)
    add_node(canvas, 1, (200, 120), preset="truck_right", amount=50.0, pivot_distance=2.0, frames=9,
             easing="linear")
    wait_status(canvas, 1, "truck_right 50")
    canvas.evaluate("""() => { const e = window.app.graph.getNodeById(1).recaptureEditor;
      e.scrubber.value = '4'; e.scrubber.dispatchEvent(new Event('input')); }""")
    canvas.wait_for_timeout(300)
    before = pixels(canvas, 1)
    # where the gizmo's centre handle is on screen
    x, y = canvas.evaluate("""() => { const e = window.app.graph.getNodeById(1).recaptureEditor;
      const v = e.gizmoTarget.position.clone().project(e.camera), r = e.canvas.getBoundingClientRect();
      return [r.left + (v.x + 1) / 2 * r.width, r.top + (1 - v.y) / 2 * r.height]; }""")
    canvas.mouse.move(x, y)
    canvas.mouse.move(x + 1, y)  # hover picks the handle
    canvas.mouse.down()
    for step in range(1, 11):
        canvas.mouse.move(x + 1, y - 6 * step)  # straight up on screen
    canvas.mouse.up()
    wait_status(canvas, 1, "custom path active (Clear to use the preset): 9 cameras")
    canvas.screenshot(path=str(artifacts / "camera_editor_gizmo_drag.png"))
    path = json.loads(canvas.evaluate(
        "() => window.app.graph.getNodeById(1).widgets.find(w => w.name === 'custom_path').value"))
    preset = camera_json(canvas, "truck_right", 50.0, 2.0, 9)
    offsets = [[n[r][3] - o[r][3] for r in range(3)] for n, o in
               ((f["pose"], g["pose"]) for f, g in zip(path["frames"], preset["frames"]))]
    up = [-o[1] for o in offsets]  # OpenCV +y is down
    assert up[4] > 0.05, offsets  # the dragged frame went up
    assert up[0] == pytest.approx(0, abs=1e-6) and up[8] == pytest.approx(0, abs=1e-6)  # the ends stay
    assert up[0] < up[1] < up[2] < up[3] < up[4] and up[4] > up[5] > up[6] > up[7] > up[8]  # smooth falloff
    assert all(f["pose"][r][:3] == g["pose"][r][:3] for f, g in zip(path["frames"], preset["frames"])
               for r in range(3))  # rotations kept
    assert changed(before, pixels(canvas, 1)) > 50
    assert pack_console_errors(canvas.messages) == []


def camera_json(page, preset: str, amount: float, pivot: float, frames: int) -> dict:
    return page.evaluate("""async (body) => (await (await window.app.api.fetchApi('/recapture/camera_path',
        {method: 'POST', body: JSON.stringify(body)})).json()).path""",
                         {"preset": preset, "amount": amount, "easing": "linear", "frames": frames,
                          "pivot_distance": pivot, "camera_file": NO_FILE, "custom_path": "", "fov_deg": 60.0})


def test_a_view_the_browser_drops_says_so_and_comes_back_on_click(canvas, artifacts):
    """Browsers keep ~16 WebGL contexts and drop the oldest: the editor then says why it is blank,
    and a click on it brings the same drawing back."""
    fresh_graph(canvas)
    add_node(canvas, 1, (120, 120), preset="orbit_left", amount=20.0, pivot_distance=2.0)
    wait_status(canvas, 1, "orbit_left 20")
    before = pixels(canvas, 1)
    canvas.evaluate("""(id) => window.app.graph.getNodeById(id).recaptureEditor.renderer.getContext()
      .getExtension('WEBGL_lose_context').loseContext()""", 1)
    wait_status(canvas, 1, "3D view paused by the browser")
    assert "orbit_left 20" in canvas.evaluate("(id) => window.app.graph.getNodeById(id).recaptureEditor.status", 1)
    canvas.screenshot(path=str(artifacts / "camera_editor_paused.png"))
    box = canvas.evaluate("""(id) => window.app.graph.getNodeById(id).recaptureEditor.canvas
      .getBoundingClientRect().toJSON()""", 1)
    canvas.mouse.click(box["x"] + 12, box["y"] + 12)  # a corner, away from the gizmo
    canvas.wait_for_function("""(id) => { const e = window.app.graph.getNodeById(id).recaptureEditor;
      return !e.contextLost && !e.status.includes('paused'); }""", arg=1, timeout=10_000)
    canvas.evaluate("(id) => window.app.graph.getNodeById(id).recaptureEditor.render()", 1)
    after = pixels(canvas, 1)
    assert after["drawn"] > 2_000 and changed(before, after) < 0.02 * len(before["sample"])
    assert pack_console_errors(canvas.messages) == []


@pytest.fixture
def camera_file(comfy) -> Path:
    """A camera file in the server's input folder: 30 cameras orbiting right. Request it before ``canvas``:
    the node's camera_file combo lists the input folder when the page loads the node definitions."""
    file = comfy.base / "input" / CAMERA_FILE
    camera.save_path_json(camera.preset_path("orbit_right", 30, 45.0, pivot_distance=2.0, easing="linear"), file)
    return file


def editor_state(page, node_id: int) -> dict:
    """The path the editor holds (what it draws), which input it says won, and its caption as shown."""
    return page.evaluate("""(id) => { const e = window.app.graph.getNodeById(id).recaptureEditor;
      return {path: e.path, source: e.pathSource, caption: e.statusLine.textContent,
              colour: e.statusLine.style.color}; }""", node_id)


def poses(camera_json: dict) -> torch.Tensor:
    return torch.tensor([f["pose"] for f in camera_json["frames"]])


def test_a_camera_file_on_the_node_is_drawn_instead_of_the_preset(camera_file, canvas, artifacts):
    """Picking a camera file in the node's combo: the editor draws the file's path (as the node renders
    it), says that it replaces the preset, and the prompt's output is the path it drew."""
    fresh_graph(canvas)
    add_node(canvas, 1, (120, 120), preset="orbit_left", amount=20.0, pivot_distance=2.0, frames=9, easing="linear")
    wait_status(canvas, 1, "orbit_left 20, 9 frames")
    preset = pixels(canvas, 1)
    assert editor_state(canvas, 1)["colour"] == ""  # the preset drives the path: plain caption
    options = canvas.evaluate("""() => window.app.graph.getNodeById(1).widgets
      .find(w => w.name === 'camera_file').options.values""")
    assert CAMERA_FILE in options, options  # the file was in the input folder when the page loaded

    set_widget(canvas, 1, "camera_file", CAMERA_FILE)
    wait_status(canvas, 1, f"camera file {CAMERA_FILE} replaces the preset: 30 cameras, resampled to 9 frames")
    drawn = editor_state(canvas, 1)
    canvas.evaluate("() => window.app.graph.setDirtyCanvas(true, true)")  # the combo shows its new value
    canvas.wait_for_timeout(300)
    canvas.screenshot(path=str(artifacts / "camera_editor_camera_file.png"))
    assert drawn["source"] == "file" and drawn["caption"].startswith(f"camera file {CAMERA_FILE} replaces the preset")
    assert drawn["colour"] != ""  # the caption is highlighted: the preset widgets are overridden
    expected = camera.resample_path(camera.load_path_file(camera_file), 9)
    assert torch.allclose(poses(drawn["path"]), expected.poses, atol=1e-5)
    assert drawn["path"]["frames"][-1]["pose"][0][3] > 0.5  # the file orbits right; the preset went left
    assert changed(preset, pixels(canvas, 1)) > 100

    # the node renders what the editor drew: run the graph with its path_json shown by a Preview Any
    canvas.evaluate("""() => { const g = window.app.graph, n = LiteGraph.createNode('PreviewAny');
      n.id = 2; g.add(n); n.pos = [620, 120]; g.getNodeById(1).connect(1, n, 0); g.setDirtyCanvas(true, true); }""")
    prompt = canvas.evaluate("async () => (await window.app.graphToPrompt()).output")
    assert prompt["1"]["inputs"]["camera_file"] == CAMERA_FILE and prompt["2"]["inputs"]["source"] == ["1", 1]
    canvas.evaluate("async () => { await window.app.queuePrompt(0, 1); }")
    canvas.wait_for_function("() => window.app.graph.getNodeById(1).recaptureEditor.run !== null", timeout=120_000)
    run = canvas.evaluate("() => window.app.graph.getNodeById(1).recaptureEditor.run")
    assert run["source"] == "file"
    assert torch.allclose(poses(run["path"]), poses(drawn["path"]), atol=1e-6)
    wait_status(canvas, 1, f"camera file {CAMERA_FILE} replaces the preset")  # still the file after the run

    # a custom path overrides the file, and the caption says how to get back
    truck = camera.path_to_json(camera.preset_path("truck_right", 3, 50.0, pivot_distance=2.0, easing="linear"))
    set_widget(canvas, 1, "custom_path", json.dumps(truck))
    wait_status(canvas, 1, "custom path active (Clear to use the preset): 3 cameras, resampled to 9 frames")
    custom = editor_state(canvas, 1)
    canvas.screenshot(path=str(artifacts / "camera_editor_custom_active.png"))
    assert custom["source"] == "custom" and custom["caption"].startswith("custom path active")
    assert custom["colour"] != ""
    assert [f["pose"][0][3] for f in custom["path"]["frames"]] == pytest.approx([i / 8 for i in range(9)], abs=1e-5)

    canvas.evaluate("() => window.app.graph.getNodeById(1).recaptureEditor.clearButton.click()")
    wait_status(canvas, 1, f"camera file {CAMERA_FILE} replaces the preset")
    set_widget(canvas, 1, "camera_file", NO_FILE)
    wait_status(canvas, 1, "orbit_left 20, 9 frames")
    assert editor_state(canvas, 1)["source"] == "preset" and editor_state(canvas, 1)["colour"] == ""
    assert pack_console_errors(canvas.messages) == []
