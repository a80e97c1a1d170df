"""ReCapture Load Video in the real frontend (issue 17): its preview is what the node will read, a connected
video_input greys out its file widgets, and the node search finds the pack's nodes by their aliases."""

from __future__ import annotations

import json

import pytest

from browser_pages import open_node_search, pack_console_errors, set_widget
from comfy_harness import REPO

pytestmark = pytest.mark.browser

NO_FOLDER = "(none: use the video)"
MEDIA_SETTLE_MS = 1_500

# What a Load Video node shows: its preview's mode and text, the frames its player holds, the file widgets'
# state, and whether the core's preview of the video file is on screen (and which file it holds).
STATE_JS = """(id) => {
  const node = window.app.graph.getNodeById(id), p = node.recaptureLoadVideo;
  node.updateComputedDisabled?.();
  const core = node.widgets.find((w) => w.name === 'video-preview');
  const video = node.videoContainer?.querySelector('video');
  const box = video?.getBoundingClientRect();
  const widgets = Object.fromEntries(['video', 'frames_folder', 'upload'].map((name) => {
    const w = node.widgets.find((w) => w.name === name);
    return [name, {disabled: !!w.disabled, computed: !!w.computedDisabled,
                   clickable: node.getWidgetOnPos(node.pos[0] + node.size[0] / 2, node.pos[1] + w.y + 5) === w}];
  }));
  return {mode: p.mode, label: p.player.label.textContent, frames: p.player.frames,
          playerShown: p.mode !== 'none' && !p.view.hidden && p.player.label.getBoundingClientRect().height > 0,
          coreShown: !!(core && !core.hidden && video && video.isConnected && box.width > 0 && box.height > 0
                        && getComputedStyle(core.element).display !== 'none'),
          coreSrc: video?.src ?? null, coreReady: video?.readyState ?? 0, widgets};
}"""

# The player's current frame drawn to a canvas: its size and the pixel at its centre.
FRAME_PIXEL_JS = """async (id) => {
  const p = window.app.graph.getNodeById(id).recaptureLoadVideo.player;
  p.pause(); p.show(0);
  await new Promise((ok) => { if (p.image.complete && p.image.naturalWidth) ok(); else p.image.onload = ok; });
  const c = document.createElement('canvas');
  c.width = p.image.naturalWidth; c.height = p.image.naturalHeight;
  const ctx = c.getContext('2d'); ctx.drawImage(p.image, 0, 0);
  return {size: [c.width, c.height],
          pixel: Array.from(ctx.getImageData(c.width >> 1, c.height >> 1, 1, 1).data.slice(0, 3))};
}"""


def state(page, node_id: int) -> dict:
    return page.evaluate(STATE_JS, node_id)


def wait_mode(page, node_id: int, mode: str, timeout: int = 20_000) -> None:
    page.wait_for_function("([id, mode]) => window.app.graph.getNodeById(id)?.recaptureLoadVideo?.mode === mode",
                           arg=[node_id, mode], timeout=timeout)
    page.wait_for_timeout(300)  # let the canvas draw it


@pytest.fixture
def sample(comfy):
    from recapture.demo_clip import write_demo_clip

    return write_demo_clip(comfy.base / "input", num_frames=14)


def add_load_video(page, **values) -> int:
    """A new Load Video node at (100, 160) on an empty graph, view at scale 1 with no offset."""
    return page.evaluate("""(values) => {
        const g = window.app.graph; g.clear();
        const ds = window.app.canvas.ds; ds.scale = 1; ds.offset = [0, 0];
        const node = LiteGraph.createNode('ReCaptureLoadVideo');
        node.pos = [100, 160]; g.add(node);
        for (const [name, value] of Object.entries(values)) {
          const w = node.widgets.find((w) => w.name === name);
          if (w.options?.values && !w.options.values.includes(value)) w.options.values.push(value);
          w.value = value; w.callback?.(value, window.app.canvas, node);
        }
        window.app.canvas.setDirty(true, true);
        return node.id;
    }""", values)


def test_depth_loader_previews_its_frames_folder_not_the_idle_video(canvas, comfy, sample, artifacts):
    """In the shipped full workflow the depth loader reads recapture_sample_depth/: its frames (grey 16-bit
    depth) play in the node, not the video its idle video widget names; the source loader previews its video."""
    workflow = json.loads((REPO / "workflows" / "ReCapture - full method with SVD.json").read_text())
    canvas.evaluate("async (wf) => { await window.app.loadGraphData(wf); }", workflow)
    loaders = canvas.evaluate("""() => Object.fromEntries(window.app.graph._nodes
        .filter((n) => n.type === 'ReCaptureLoadVideo')
        .map((n) => [n.widgets.find((w) => w.name === 'frames_folder').value, n.id]))""")
    depth, source = loaders["recapture_sample_depth/"], loaders[NO_FOLDER]
    wait_mode(canvas, depth, "frames")
    canvas.wait_for_function("(id) => window.app.graph.getNodeById(id).videoContainer?.querySelector('video')"
                             "?.readyState >= 2", arg=source, timeout=20_000)
    canvas.wait_for_timeout(500)
    canvas.screenshot(path=str(artifacts / "load_video_frames_folder.png"))

    shown = state(canvas, depth)
    assert len(shown["frames"]) == 14 and shown["playerShown"], shown
    assert all("subfolder=recapture_sample_depth" in url and "type=input" in url for url in shown["frames"])
    assert not shown["coreShown"], shown  # the idle video widget's file is not previewed
    frame = canvas.evaluate(FRAME_PIXEL_JS, depth)
    assert frame["size"] == [1024, 576]  # the folder's frame as it is, before the node sizes it
    r, g, b = frame["pixel"]
    assert r == g == b and r > 0, frame  # a grey depth frame, not a frame of the colour video

    video = state(canvas, source)
    assert video["mode"] == "none" and not video["playerShown"], video
    assert video["coreShown"] and "recapture_sample.mp4" in video["coreSrc"], video
    assert pack_console_errors(canvas.messages) == []


def widget_rows(page, node_id: int) -> bytes:
    """A screenshot of the node's video and frames_folder widget rows."""
    box = page.evaluate("""(id) => {
        const node = window.app.graph.getNodeById(id), r = window.app.canvas.canvas.getBoundingClientRect();
        const w = node.widgets.find((w) => w.name === 'video'), f = node.widgets.find((w) => w.name === 'frames_folder');
        return {x: r.left + node.pos[0], y: r.top + node.pos[1] + w.y, width: node.size[0],
                height: f.y + (f.computedHeight || LiteGraph.NODE_WIDGET_HEIGHT) - w.y};
    }""", node_id)
    return page.screenshot(clip=box)


def differing_pixels(a: bytes, b: bytes) -> int:
    import io

    import numpy as np
    from PIL import Image

    x, y = (np.asarray(Image.open(io.BytesIO(p)).convert("RGB")).astype(int) for p in (a, b))
    assert x.shape == y.shape
    return int((np.abs(x - y).sum(axis=2) > 60).sum())


def test_a_connected_video_input_greys_out_the_file_widgets(canvas, comfy, sample, artifacts):
    node = add_load_video(canvas, video="recapture_sample.mp4")
    canvas.wait_for_timeout(800)
    before = state(canvas, node)
    assert not any(w["disabled"] or w["computed"] for w in before["widgets"].values()), before
    assert before["widgets"]["video"]["clickable"] and before["widgets"]["frames_folder"]["clickable"]
    enabled = widget_rows(canvas, node)

    # a core Load Video's VIDEO into video_input, as a person drags the link
    canvas.evaluate("""(id) => {
        const node = window.app.graph.getNodeById(id), core = LiteGraph.createNode('LoadVideo');
        core.pos = [600, 160]; window.app.graph.add(core);
        core.connect(0, node, node.inputs.findIndex((i) => i.name === 'video_input'));
        window.app.canvas.setDirty(true, true);
    }""", node)
    wait_mode(canvas, node, "message")
    canvas.wait_for_timeout(500)
    canvas.screenshot(path=str(artifacts / "load_video_linked.png"))
    linked = state(canvas, node)
    assert all(w["disabled"] and w["computed"] and not w["clickable"] for w in linked["widgets"].values()), linked
    assert "connected video_input" in linked["label"] and not linked["coreShown"], linked
    greyed = widget_rows(canvas, node)
    assert differing_pixels(enabled, greyed) > 200  # drawn greyed out, without their values

    canvas.evaluate("""(id) => {
        const node = window.app.graph.getNodeById(id);
        node.disconnectInput(node.inputs.findIndex((i) => i.name === 'video_input'));
        window.app.canvas.setDirty(true, true);
    }""", node)
    canvas.wait_for_function("(id) => !window.app.graph.getNodeById(id).widgets.find((w) => w.name === 'video')"
                             ".disabled", arg=node, timeout=10_000)
    canvas.wait_for_timeout(500)
    again = state(canvas, node)
    assert not any(w["disabled"] or w["computed"] for w in again["widgets"].values()), again
    assert differing_pixels(enabled, widget_rows(canvas, node)) < 50
    assert pack_console_errors(canvas.messages) == []


def test_an_upload_that_fails_to_decode_leaves_no_preview_of_the_old_file(canvas, comfy, sample, artifacts,
                                                                           tmp_path):
    node = add_load_video(canvas, video="recapture_sample.mp4")
    canvas.wait_for_function("(id) => window.app.graph.getNodeById(id).videoContainer?.querySelector('video')"
                             "?.readyState >= 2", arg=node, timeout=20_000)
    canvas.wait_for_timeout(300)
    assert state(canvas, node)["coreShown"]

    # the upload button, clicked as a person does, and a file that is no video
    broken = tmp_path / "broken_upload.mp4"
    broken.write_bytes(b"this is not a video" * 64)
    button = canvas.evaluate("""(id) => {
        const node = window.app.graph.getNodeById(id), r = window.app.canvas.canvas.getBoundingClientRect();
        const w = node.widgets.find((w) => w.name === 'upload');
        return [r.left + node.pos[0] + node.size[0] / 2, r.top + node.pos[1] + w.y + 10];
    }""", node)
    for attempt in range(3):  # a loaded machine may still be settling the canvas when the first click lands
        try:
            with canvas.expect_file_chooser(timeout=10_000) as chooser:
                canvas.mouse.click(*button)
            break
        except Exception:
            if attempt == 2:
                raise
            canvas.wait_for_timeout(1000)
    chooser.value.set_files(str(broken))
    canvas.wait_for_function("(id) => window.app.graph.getNodeById(id).widgets.find((w) => w.name === 'video')"
                             ".value === 'broken_upload.mp4'", arg=node, timeout=20_000)
    assert (comfy.base / "input" / "broken_upload.mp4").is_file()  # it was uploaded
    wait_mode(canvas, node, "message")
    canvas.wait_for_timeout(MEDIA_SETTLE_MS)  # the core's own attempt at loading it has given up by now
    canvas.screenshot(path=str(artifacts / "load_video_broken_upload.png"))
    shown = state(canvas, node)
    assert "cannot play broken_upload.mp4" in shown["label"] and shown["playerShown"], shown
    assert not shown["coreShown"] and not (shown["coreSrc"] or "").count("recapture_sample.mp4"), shown

    # picking a playable file again brings its preview back
    set_widget(canvas, node, "video", "recapture_sample.mp4")
    canvas.wait_for_function("(id) => window.app.graph.getNodeById(id).videoContainer?.querySelector('video')"
                             "?.readyState >= 2", arg=node, timeout=20_000)
    wait_mode(canvas, node, "none")
    assert state(canvas, node)["coreShown"]
    assert pack_console_errors(canvas.messages) == []



def test_node_search_finds_camera_trajectory_by_typing_orbit(canvas, artifacts):
    canvas.evaluate("() => { window.app.graph.clear(); window.app.graph.setDirtyCanvas(true, true); }")
    search = open_node_search(canvas)
    search.fill("orbit")
    canvas.wait_for_timeout(800)
    canvas.screenshot(path=str(artifacts / "node_search_orbit.png"))
    options = canvas.evaluate("""() => [...document.querySelectorAll("[role='option'], .p-autocomplete-option")]
        .filter((el) => el.getClientRects().length && el.innerText.trim()).map((el) => el.innerText)""")
    assert options and "ReCapture Camera Trajectory" in options[0], options  # first: Enter adds it
    canvas.keyboard.press("Enter")
    canvas.wait_for_function("() => window.app.graph._nodes.some((n) => n.type === 'ReCaptureCameraTrajectory')",
                             timeout=10_000)
    assert pack_console_errors(canvas.messages) == []
