"""The camera editor draws exactly what the node will render (issue 17, item 2), and the pack leaves the
browser console clean (item 12), in the real frontend with real WebGL (SwiftShader).

What the editor drew is read back from its scene (``recaptureEditor.drawnCameras()``: the path line's
vertices, where the selected camera and its gizmo are on the view) and from its canvas pixels; which
widgets it greys out from the frontend's own ``computedDisabled``, which is what the canvas draws.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests
import torch

from browser_pages import pack_console_errors, pixels, set_widget, wait_status
from comfy_harness import REPO
from recapture import camera

pytestmark = pytest.mark.browser

NODE = "ReCaptureCameraTrajectory"
PACK = "/extensions/ComfyUI-ReCapture/"
NO_FILE = "(none: use the preset)"
CAMERA_FILE = "editor_truth_orbit.json"  # written into the server's input folder by the camera_file fixture
PRESET_WIDGETS = ["preset", "amount", "easing"]
STAND_IN_LINKED = "a stand-in: the connected point cloud's depth sets it when the graph runs"
STAND_IN_UNLINKED = "a stand-in: with pivot_distance 0 the node needs a point cloud to run"


def add_node(page, node_id: int, pos: tuple[int, int], node_type: str = NODE, **widgets) -> None:
    page.evaluate("""([id, type, pos, widgets]) => {
      const n = LiteGraph.createNode(type); n.id = id; window.app.graph.add(n); n.pos = pos;
      for (const [k, v] of Object.entries(widgets)) n.widgets.find(w => w.name === k).value = v;
      window.app.graph.setDirtyCanvas(true, true);
    }""", [node_id, node_type, list(pos), widgets])


def fresh_graph(page) -> None:
    page.evaluate("""() => { const app = window.app; app.graph.clear(); app.canvas.ds.scale = 1;
      app.canvas.ds.offset = [0, 0]; app.graph.setDirtyCanvas(true, true); }""")


def drawn(page, node_id: int) -> dict:
    return page.evaluate("(id) => window.app.graph.getNodeById(id).recaptureEditor.drawnCameras()", node_id)


def greyed(page, node_id: int) -> dict:
    """Each widget's state as the canvas draws it (after a redraw): ``computedDisabled`` = half alpha."""
    page.evaluate("() => window.app.canvas.draw(true, true)")
    return page.evaluate("""(id) => Object.fromEntries(window.app.graph.getNodeById(id).widgets
      .filter(w => w.name !== 'camera_editor').map(w => [w.name, !!w.computedDisabled]))""", node_id)


def centres(path: camera.CameraPath) -> list[list[float]]:
    return path.poses[:, :3, 3].tolist()


def assert_drawn(page, node_id: int, expected: camera.CameraPath) -> dict:
    d = drawn(page, node_id)
    assert torch.allclose(torch.tensor(d["centres"]), torch.tensor(centres(expected)), atol=1e-5), d["centres"]
    return d


def clicked(page, node_id: int, button: str) -> None:
    page.evaluate("([id, b]) => window.app.graph.getNodeById(id).recaptureEditor[b].click()", [node_id, button])


@pytest.fixture
def camera_file(comfy) -> Path:
    """A camera file in the server's input folder, 30 cameras orbiting right. Requested before ``canvas``:
    the camera_file combo lists the input folder when the page loads the node definitions."""
    file = comfy.base / "input" / CAMERA_FILE
    camera.save_path_json(camera.preset_path("orbit_right", 30, 45.0, pivot_distance=2.0, easing="linear"), file)
    return file


def test_the_drawn_path_is_the_winning_inputs_and_overridden_widgets_are_greyed(camera_file, canvas, artifacts):
    fresh_graph(canvas)
    add_node(canvas, 1, (120, 160), preset="orbit_left", amount=20.0, pivot_distance=2.0, frames=9, easing="linear")
    wait_status(canvas, 1, "orbit_left 20, 9 frames")
    assert_drawn(canvas, 1, camera.preset_path("orbit_left", 9, 20.0, pivot_distance=2.0, easing="linear"))
    assert drawn(canvas, 1)["banner"] == ""
    assert not any(greyed(canvas, 1).values())

    # (a) a camera file: the drawn cameras are the file's, resampled as the node does
    set_widget(canvas, 1, "camera_file", CAMERA_FILE)
    wait_status(canvas, 1, f"camera file {CAMERA_FILE} replaces the preset")
    d = assert_drawn(canvas, 1, camera.resample_path(camera.load_path_file(camera_file), 9))
    assert d["centres"][-1][0] > 0.5  # orbiting right: the preset went left
    # (b) it says so over the view and greys out the preset widgets it overrides
    assert d["banner"] == f'camera file {CAMERA_FILE} active - set camera_file to "{NO_FILE}" to use the preset'
    state = greyed(canvas, 1)
    assert all(state[w] for w in PRESET_WIDGETS) and not state["camera_file"] and not state["frames"], state
    canvas.screenshot(path=str(artifacts / "editor_truth_camera_file.png"))

    # a custom path over the file: its cameras, the banner, the file greyed out too
    truck = camera.preset_path("truck_right", 3, 50.0, pivot_distance=2.0, easing="linear")
    set_widget(canvas, 1, "custom_path", json.dumps(camera.path_to_json(truck)))
    wait_status(canvas, 1, "custom path active")
    d = assert_drawn(canvas, 1, camera.resample_path(truck, 9))
    assert d["banner"] == "custom path active - Clear to use the camera file"
    state = greyed(canvas, 1)
    assert all(state[w] for w in [*PRESET_WIDGETS, "camera_file"]) and not state["pivot_distance"], state
    canvas.screenshot(path=str(artifacts / "editor_truth_custom_path.png"))
    # the prompt still carries every value (greyed widgets are not dropped)
    prompt = canvas.evaluate("async () => (await window.app.graphToPrompt()).output")
    assert prompt["1"]["inputs"]["preset"] == "orbit_left" and prompt["1"]["inputs"]["camera_file"] == CAMERA_FILE

    clicked(canvas, 1, "clearButton")
    wait_status(canvas, 1, f"camera file {CAMERA_FILE} replaces the preset")
    assert not greyed(canvas, 1)["camera_file"]
    set_widget(canvas, 1, "camera_file", NO_FILE)
    wait_status(canvas, 1, "orbit_left 20, 9 frames")
    assert_drawn(canvas, 1, camera.preset_path("orbit_left", 9, 20.0, pivot_distance=2.0, easing="linear"))
    assert drawn(canvas, 1)["banner"] == "" and not any(greyed(canvas, 1).values())

    # a custom path over the preset: Clear goes back to the preset
    set_widget(canvas, 1, "custom_path", json.dumps(camera.path_to_json(truck)))
    wait_status(canvas, 1, "custom path active")
    assert drawn(canvas, 1)["banner"] == "custom path active - Clear to use the preset"
    state = greyed(canvas, 1)
    assert all(state[w] for w in [*PRESET_WIDGETS, "camera_file"]), state
    assert pack_console_errors(canvas.messages) == []


def test_an_automatic_pivot_before_a_run_says_where_it_will_come_from(canvas, artifacts):
    """The subject's distance is the point cloud's depth, known only once the graph runs: before that the
    editor draws a stand-in and its caption says so, and whether the node can run at all."""
    fresh_graph(canvas)
    add_node(canvas, 1, (420, 160), preset="orbit_left", amount=20.0, pivot_distance=0.0, frames=9)
    wait_status(canvas, 1, STAND_IN_UNLINKED)
    assert "(pivot 1, " in canvas.evaluate("() => window.app.graph.getNodeById(1).recaptureEditor.status")
    assert not greyed(canvas, 1)["frames"]

    add_node(canvas, 2, (40, 160), node_type="ReCaptureDepthToPointCloud")
    canvas.evaluate("""() => { const g = window.app.graph;
      g.getNodeById(2).connect(0, g.getNodeById(1), 'point_cloud'); g.setDirtyCanvas(true, true); }""")
    wait_status(canvas, 1, STAND_IN_LINKED)
    line = canvas.evaluate("""() => { const s = window.app.graph.getNodeById(1).recaptureEditor.statusLine;
      const r = s.getBoundingClientRect(); return {text: s.textContent, width: r.width, scroll: s.scrollWidth}; }""")
    assert STAND_IN_LINKED in line["text"] and line["scroll"] <= line["width"] + 1, line  # wrapped, not cut
    assert greyed(canvas, 1)["frames"]  # the clip's frame count wins
    canvas.screenshot(path=str(artifacts / "editor_truth_pivot_stand_in.png"))
    canvas.evaluate("() => { const g = window.app.graph; g.getNodeById(1).disconnectInput('point_cloud'); }")
    wait_status(canvas, 1, STAND_IN_UNLINKED)
    assert not greyed(canvas, 1)["frames"]
    assert pack_console_errors(canvas.messages) == []


def gizmo_pixels(page, node_id: int) -> dict:
    """Pixels of the gizmo's pure red (x) and blue (z) arrows: no path, camera or pivot colour is either."""
    return page.evaluate("""(id) => {
      const src = window.app.graph.getNodeById(id).recaptureEditor.canvas;
      const c = document.createElement('canvas'); c.width = src.width; c.height = src.height;
      const ctx = c.getContext('2d'); ctx.drawImage(src, 0, 0);
      const d = ctx.getImageData(0, 0, c.width, c.height).data; let red = 0, blue = 0;
      for (let i = 0; i < d.length; i += 4) {
        if (d[i] > 200 && d[i + 1] < 70 && d[i + 2] < 70) red++;
        if (d[i + 2] > 200 && d[i] < 70 && d[i + 1] < 70) blue++;
      }
      return {red, blue}; }""", node_id)


def assert_in_view(page, node_id: int) -> dict:
    d = drawn(page, node_id)
    x, y = d["selectedNdc"]
    assert abs(x) <= 0.75 and abs(y) <= 0.75, d["selectedNdc"]  # the selected camera, with room for its gizmo
    assert all(abs(u) <= 1.0 and abs(v) <= 1.0 for u, v in d["centresNdc"]), d["centresNdc"]  # the whole path
    g = gizmo_pixels(page, node_id)
    assert g["red"] > 8 and g["blue"] > 8, g  # the gizmo's handles are drawn on the canvas
    return d


def test_the_view_follows_the_path_so_the_selected_camera_and_its_gizmo_stay_on_screen(canvas, artifacts):
    fresh_graph(canvas)
    add_node(canvas, 1, (120, 160), preset="truck_right", amount=20.0, pivot_distance=2.0, frames=9, easing="linear")
    wait_status(canvas, 1, "truck_right 20")
    assert_in_view(canvas, 1)
    # the move grows tenfold past the view: scrubbing to its end keeps that camera and its gizmo on screen
    set_widget(canvas, 1, "amount", 1000.0)
    wait_status(canvas, 1, "truck_right 1000")
    canvas.evaluate("""() => { const e = window.app.graph.getNodeById(1).recaptureEditor;
      e.scrubber.value = e.scrubber.max; e.scrubber.dispatchEvent(new Event('input')); }""")
    canvas.wait_for_timeout(300)
    d = assert_in_view(canvas, 1)
    assert d["selected"] == 8 and d["centres"][8][0] == pytest.approx(20.0, abs=1e-4)
    canvas.screenshot(path=str(artifacts / "editor_truth_reframed.png"))
    # the other way, and a camera file far away, with the last frame still selected
    set_widget(canvas, 1, "preset", "pedestal_down")
    wait_status(canvas, 1, "pedestal_down 1000")
    assert_in_view(canvas, 1)
    far = camera.preset_path("dolly_out", 5, 3000.0, pivot_distance=2.0, easing="linear")
    set_widget(canvas, 1, "custom_path", json.dumps(camera.path_to_json(far)))
    wait_status(canvas, 1, "custom path active")
    assert_in_view(canvas, 1)
    # a view that already shows the path is left where the user put it
    before = canvas.evaluate("() => window.app.graph.getNodeById(1).recaptureEditor.camera.position.toArray()")
    canvas.evaluate("""() => { const e = window.app.graph.getNodeById(1).recaptureEditor;
      e.scrubber.value = '2'; e.scrubber.dispatchEvent(new Event('input')); }""")
    canvas.wait_for_timeout(300)
    after = canvas.evaluate("() => window.app.graph.getNodeById(1).recaptureEditor.camera.position.toArray()")
    assert after == pytest.approx(before)
    assert pixels(canvas, 1)["drawn"] > 300
    assert pack_console_errors(canvas.messages) == []


# --- item 12: a clean console --------------------------------------------------------------------------
def ours(message: dict) -> bool:
    """A console error or warning from this pack: logged from its files (WebGL warnings name the script
    that made the call: our three.js is under /extensions/<pack>/lib/three/), about one of its URLs or
    naming it, or three.js's warning about a second copy (logged by whichever copy loads second)."""
    text, url = message["text"], message["url"]
    if url.startswith("https://api.comfy.org/"):  # the frontend's registry look-ups of node ids, offline
        return False
    return message["type"] in ("error", "warning") and (
        PACK in url or "recapture" in text.lower() or "recapture" in url.lower()
        or "Multiple instances of Three.js" in text)


def without_preview_3d(workflow: dict) -> dict:
    """The workflow without the core Preview 3D node (and its links)."""
    drop = {n["id"] for n in workflow["nodes"] if n["type"] == "Preview3D"}
    links = [link for link in workflow["links"] if link[1] not in drop and link[3] not in drop]
    kept = {link[0] for link in links}
    nodes = [json.loads(json.dumps(n)) for n in workflow["nodes"] if n["id"] not in drop]
    for n in nodes:
        for slot in n.get("outputs") or []:
            slot["links"] = [i for i in slot.get("links") or [] if i in kept]
    return {**workflow, "nodes": nodes, "links": links}


def open_help(page, node_type: str) -> str:
    """Opens a node's help page as the node library's help button does; returns its rendered HTML."""
    page.evaluate("""(type) => {
      const pinia = document.querySelector('#vue-app').__vue_app__.config.globalProperties.$pinia;
      const def = pinia._s.get('nodeDef').nodeDefsByName[type];
      pinia._s.get('nodeHelp').openHelp(def); }""", node_type)
    page.wait_for_function("""() => { const pinia = document.querySelector('#vue-app').__vue_app__.config
      .globalProperties.$pinia; const h = pinia._s.get('nodeHelp'); return !h.isLoading && h.renderedHelpHtml; }""")
    return page.evaluate("""() => document.querySelector('#vue-app').__vue_app__.config.globalProperties.$pinia
      ._s.get('nodeHelp').renderedHelpHtml""")


def test_help_pages_and_workflow_switches_leave_no_console_noise_from_the_pack(canvas, comfy, artifacts):
    from recapture.demo_clip import write_demo_clip

    write_demo_clip(comfy.base / "input", num_frames=14)
    responses: list[tuple[int, str]] = []
    canvas.on("response", lambda r: responses.append((r.status, r.url)))
    anchor = json.loads((REPO / "workflows" / "ReCapture - anchor video and mask.json").read_text())
    full = json.loads((REPO / "workflows" / "ReCapture - full method with SVD.json").read_text())

    canvas.evaluate("async (wf) => { await window.app.loadGraphData(wf); }", anchor)
    trajectory = canvas.evaluate("() => window.app.graph._nodes.find(n => n.type === '%s').id" % NODE)
    wait_status(canvas, trajectory, "orbit_left 15")

    # the help page: the frontend asks for docs/<Node>/<locale>.md first; the pictures resolve
    canvas.evaluate("() => window.app.extensionManager.command.execute('Workspace.ToggleSidebarTab.node-library')")
    html = open_help(canvas, NODE)
    assert "<h1" in html and "camera_editor.png" in html, html[:300]
    canvas.wait_for_function("""() => [...document.querySelectorAll('img')].some(i => i.src.includes('/docs/camera_editor.png')
      && i.complete && i.naturalWidth > 0)""", timeout=10_000)
    canvas.screenshot(path=str(artifacts / "editor_truth_help_page.png"))
    docs = [(s, u) for s, u in responses if f"{PACK}docs/" in u]
    assert docs[0] == (200, f"{comfy.url}{PACK}docs/{NODE}/en.md"), docs
    open_help(canvas, "ReCaptureRenderAnchor")
    # every node's page at the path asked for: the pack's route answers it with the one page, docs/<Node>.md
    docs_folder = REPO / "web" / "docs"
    pages = sorted(docs_folder.glob("ReCapture*.md"))
    assert len(pages) >= 10
    for page in pages:
        for locale in ("en", "zh"):
            answer = requests.get(f"{comfy.url}{PACK}docs/{page.stem}/{locale}.md", timeout=10)
            assert answer.status_code == 200 and answer.text == page.read_text(encoding="utf-8"), page.name
    assert requests.get(f"{comfy.url}{PACK}docs/NotANode/en.md", timeout=10).status_code == 404

    # switching workflows (tabs) back and forth: the editors are made and disposed each time
    canvas.evaluate("() => window.app.extensionManager.command.execute('Comfy.NewBlankWorkflow')")
    canvas.evaluate("async (wf) => { await window.app.loadGraphData(wf); }", full)
    canvas.wait_for_timeout(800)
    for command in ("Previous", "Next", "Previous", "Next"):
        canvas.evaluate("(c) => window.app.extensionManager.command.execute(`Workspace.${c}OpenedWorkflow`)", command)
        canvas.wait_for_timeout(800)
    assert canvas.evaluate("() => window.app.graph._nodes.filter(n => n.type === '%s').length" % NODE) == 1
    # The core Preview 3D node in the shipped workflows logs "loseContext: context already lost" itself
    # (the frontend's three.js loses its context twice on removal); without it nothing WebGL complains.
    canvas.evaluate("async (wf) => { await window.app.loadGraphData(wf); }", without_preview_3d(anchor))
    canvas.wait_for_timeout(800)  # the last Preview 3D is gone
    start = len(canvas.messages)
    for workflow in (without_preview_3d(full), without_preview_3d(anchor), without_preview_3d(full)):
        canvas.evaluate("async (wf) => { await window.app.loadGraphData(wf); }", workflow)
        canvas.wait_for_timeout(800)
    canvas.evaluate("() => window.app.graph.clear()")
    canvas.wait_for_timeout(500)
    webgl = [m for m in canvas.messages[start:] if "WebGL: " in m["text"]]
    assert webgl == []
    canvas.screenshot(path=str(artifacts / "editor_truth_after_switching.png"))

    missing = [(s, u) for s, u in responses if s >= 400 and PACK in u]
    assert missing == []
    noise = [m for m in canvas.messages if m["type"] in ("error", "warning")]
    assert [m for m in noise if ours(m)] == [], noise
    assert pack_console_errors(canvas.messages) == []
