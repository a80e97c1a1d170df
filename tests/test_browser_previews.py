"""The pack's in-node previews in the real frontend: a finished run stays visible after a page reload, in
a new tab, on cached runs and under the Vue node renderer (Render Anchor's, Sample's and Refine's players,
the camera editor's points, Train Masked LoRA's loss curve: web/last_run.js); Render Anchor shows one
frame label and its toggle on one line (web/video_player.js); the loss picture says what the node's status
line says. Pictures are asserted by their pixels; screenshots land in test-artifacts/previews_*.png."""

from __future__ import annotations

import io
import json
import re
import time
import uuid

import numpy as np
import pytest
import requests

from browser_pages import pixels
from comfy_harness import REPO
from conftest import save_tiny_svd_folder

pytestmark = pytest.mark.browser

ANCHOR_FRAMES = 14  # the shipped anchor workflow's frame_count
VUE_SETTING = "Comfy.VueNodes.Enabled"
PROGRESS_TEXT = "$$node-text-preview"  # the frontend's widget for a node's progress text

# What a player shows, read from the page: its state, its picture's pixels (not uniform: frames, not a
# blank), whether that picture is what a person sees at its centre, and the frame labels on screen inside
# the node (the player's, the frontend's progress text...; the camera editor's own is another node's).
PLAYER_JS = """async (id) => {
  const app = window.app, node = app.graph.getNodeById(id), p = node.recapturePlayer, img = p.image;
  if (p.frames.length && !img.complete) await new Promise((ok) => { img.onload = ok; img.onerror = ok; });
  const c = document.createElement('canvas'); c.width = img.naturalWidth || 1; c.height = img.naturalHeight || 1;
  const ctx = c.getContext('2d'); if (img.naturalWidth) ctx.drawImage(img, 0, 0);
  const d = ctx.getImageData(0, 0, c.width, c.height).data, colours = new Set();
  for (let i = 0; i < d.length; i += 4) colours.add((d[i] >> 3) << 10 | (d[i + 1] >> 3) << 5 | (d[i + 2] >> 3));
  const r = img.getBoundingClientRect(), seen = document.elementFromPoint(r.x + r.width / 2, r.y + r.height / 2);
  const box = node.recaptureNodeBox?.() ?? (() => {
    const vue = document.querySelector(`[data-node-id="${id}"]`);
    if (vue) return vue.getBoundingClientRect();
    const ds = app.canvas.ds, cr = app.canvas.canvas.getBoundingClientRect(), title = LiteGraph.NODE_TITLE_HEIGHT;
    return {left: cr.left + (node.pos[0] + ds.offset[0]) * ds.scale, top: cr.top + (node.pos[1] - title + ds.offset[1]) * ds.scale,
            right: cr.left + (node.pos[0] + node.size[0] + ds.offset[0]) * ds.scale,
            bottom: cr.top + (node.pos[1] + node.size[1] + ds.offset[1]) * ds.scale};
  })();
  const shown = (el) => { const q = el.getBoundingClientRect(), s = getComputedStyle(el);
    return q.width > 0 && q.height > 0 && s.visibility !== 'hidden' && el.checkVisibility(); };
  const labels = [...document.querySelectorAll('body *')].filter((el) => [...el.childNodes].some((t) =>
      t.nodeType === 3 && /\\bframe \\d+\\/\\d+/.test(t.textContent)) && shown(el) && !el.closest('.recapture-camera-editor'))
    .map((el) => ({text: el.textContent, rect: el.getBoundingClientRect().toJSON(), player: el === p.label}))
    .filter(({rect}) => rect.x + rect.width / 2 > box.left && rect.x + rect.width / 2 < box.right
                        && rect.y + rect.height / 2 > box.top && rect.y + rect.height / 2 < box.bottom);
  return {frames: p.frames.length, natural: img.naturalWidth, colours: colours.size, width: r.width, height: r.height,
          visible: seen === img, hint: p.label.textContent.includes('run the graph'), labels,
          progressText: (node.widgets ?? []).some((w) => w.name === '%s')};
}""" % PROGRESS_TEXT

# Render Anchor's toggle: its text on one line, beside its checkbox, inside the player.
TOGGLE_JS = """(id) => {
  const p = window.app.graph.getNodeById(id).recapturePlayer, t = p.checkbox.parentElement;
  const text = [...t.childNodes].find((n) => n.nodeType === 3), range = document.createRange();
  range.selectNodeContents(text);
  const lines = new Set([...range.getClientRects()].map((q) => Math.round(q.top)));
  const box = t.getBoundingClientRect(), check = p.checkbox.getBoundingClientRect(),
        player = p.element.getBoundingClientRect(), words = range.getBoundingClientRect();
  return {text: text.textContent.trim(), lines: lines.size, height: box.height,
          inside: box.left >= player.left - 0.5 && box.right <= player.right + 0.5,
          beside: check.right <= words.left && Math.abs((check.top + check.bottom) / 2 - (words.top + words.bottom) / 2) < 6};
}"""


def pack_problems(messages: list[dict]) -> list[dict]:
    """The pack's console errors and warnings (the core frontend's own 404s and registry look-ups are not ours)."""
    return [m for m in messages if m["type"] in ("error", "warning")
            and ("recapture" in m["text"].lower() or "recapture" in m["url"].lower())
            and not m["url"].startswith("https://api.comfy.org/")]


def watched(page):
    """A page whose console messages and page errors land in ``page.messages`` (as the canvas fixture's)."""
    page.messages = []
    page.on("console", lambda m: page.messages.append({"type": m.type, "text": m.text, "url": m.location.get("url", "")}))
    page.on("pageerror", lambda e: page.messages.append({"type": "error", "text": str(e), "url": ""}))
    return page


def open_frontend(page, comfy):
    page.goto(comfy.url, wait_until="domcontentloaded")
    ready(page)


def ready(page):
    page.wait_for_function("() => window.app && window.app.graph && window.app.canvas && window.app.graph.nodes?.length",
                           timeout=60_000)
    page.wait_for_timeout(1000)


def node_ids(page) -> dict:
    return page.evaluate("""() => Object.fromEntries(window.app.graph.nodes
        .filter((n) => n.type.startsWith('ReCapture')).map((n) => [n.type, n.id]))""")


def centre_on(page, node_id: int) -> None:
    """The node on screen at scale 1, its top left at (300, 120)."""
    page.evaluate("""(id) => { const app = window.app, n = app.graph.getNodeById(id);
      app.canvas.ds.scale = 1; app.canvas.ds.offset = [300 - n.pos[0], 120 - n.pos[1]];
      app.graph.setDirtyCanvas(true, true); }""", node_id)
    page.wait_for_timeout(400)


def player(page, node_id: int, frames: int, timeout: int = 60_000) -> dict:
    """Waits for the node's player to hold ``frames`` frames; returns what it shows (``PLAYER_JS``)."""
    page.wait_for_function("([id, n]) => window.app.graph.getNodeById(id)?.recapturePlayer?.frames.length === n",
                           arg=[node_id, frames], timeout=timeout)
    page.evaluate("(id) => { const p = window.app.graph.getNodeById(id).recapturePlayer; p.pause();"
                  " p.show(Math.floor(p.frames.length / 2)); }", node_id)
    return page.evaluate(PLAYER_JS, node_id)


def assert_plays(state: dict, frames: int, label: str) -> None:
    """The player shows frames as a person sees them: a real picture, on screen, no hint, one frame label."""
    assert state["frames"] == frames, (label, state)
    assert state["natural"] > 0 and state["colours"] > 20, (label, state)
    assert state["width"] > 100 and state["height"] > 50 and state["visible"], (label, state)
    assert not state["hint"], (label, state)
    assert [x["player"] for x in state["labels"]] == [True], (label, state["labels"])
    assert state["labels"][0]["text"] == f"frame {frames // 2 + 1}/{frames}", (label, state["labels"])


def assert_points(page, node_id: int, label: str) -> None:
    page.wait_for_function("(id) => window.app.graph.getNodeById(id).recaptureEditor.pointCount > 1000",
                           arg=node_id, timeout=60_000)
    page.wait_for_timeout(500)
    drawn = pixels(page, node_id)
    assert drawn["drawn"] > 3_000 and drawn["distinct"] > 30, (label, {k: drawn[k] for k in ("drawn", "distinct")})
    status = page.evaluate("(id) => window.app.graph.getNodeById(id).recaptureEditor.status", node_id)
    assert "from the last run's depth" in status, (label, status)  # the run's pivot, not the stand-in


def queue_and_wait(page, comfy, runs_before: int, timeout: float = 600) -> None:
    """Queues the page's graph as the Queue button does and waits until the server has finished it."""
    page.evaluate("async () => { await window.app.queuePrompt(0, 1); }")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        history, queue = comfy.get("/history"), comfy.get("/queue")
        if len(history) > runs_before and not queue["queue_running"] and not queue["queue_pending"]:
            statuses = [h["status"]["status_str"] for h in history.values()]
            errors = [(d.get("node_type"), d.get("exception_message")) for h in history.values()
                      for kind, d in h["status"]["messages"] if kind == "execution_error"]
            assert statuses == ["success"] * len(statuses), errors
            page.wait_for_timeout(800)  # the last websocket messages
            return
        time.sleep(0.3)
    raise AssertionError(f"the run did not finish within {timeout} s:\n{comfy.log_tail()}")


def cached_nodes(comfy) -> list[set[str]]:
    """For each run in the history, oldest first: the nodes the server took from its cache."""
    return [{n for kind, data in h["status"]["messages"] if kind == "execution_cached" for n in data["nodes"]}
            for h in comfy.get("/history").values()]


@pytest.fixture
def empty_history(comfy):
    """A history of this test's runs only (what is restored comes from it), and none left for other tests."""
    requests.post(comfy.url + "/history", json={"clear": True}, timeout=30)
    yield
    requests.post(comfy.url + "/history", json={"clear": True}, timeout=30)


def set_vue_nodes(page, on: bool) -> None:
    page.evaluate("async (on) => { await window.app.extensionManager.setting.set('%s', on); }" % VUE_SETTING, on)


def new_tab(browser, page):
    """Another tab of the same browser profile: ``page``'s local storage (the graph the frontend restores)."""
    context = browser.new_context(storage_state=page.context.storage_state(), viewport={"width": 1400, "height": 900})
    return watched(context.new_page())


def test_anchor_previews_survive_reload_new_tab_cached_runs_and_vue_nodes(empty_history, browser, canvas, comfy,
                                                                          artifacts):
    from recapture.demo_clip import write_demo_clip

    write_demo_clip(comfy.base / "input", num_frames=14)
    workflow = json.loads((REPO / "workflows" / "ReCapture - anchor video and mask.json").read_text())
    canvas.evaluate("async (wf) => { await window.app.loadGraphData(wf); }", workflow)
    ids = node_ids(canvas)
    render, trajectory = ids["ReCaptureRenderAnchor"], ids["ReCaptureCameraTrajectory"]
    before = canvas.evaluate(PLAYER_JS, render)
    assert before["frames"] == 0 and before["hint"] and not before["labels"]  # nothing run yet: the hint
    hinted = canvas.evaluate(TOGGLE_JS, render)  # the hint beside it: the toggle still on one line
    assert hinted["lines"] == 1 and hinted["inside"] and hinted["beside"], hinted

    queue_and_wait(canvas, comfy, 0)
    centre_on(canvas, render)
    state = player(canvas, render, ANCHOR_FRAMES)
    canvas.screenshot(path=str(artifacts / "previews_anchor_after_run.png"))
    assert_plays(state, ANCHOR_FRAMES, "after the run")  # one frame label: the progress text is gone
    toggle = canvas.evaluate(TOGGLE_JS, render)
    assert toggle["text"] == "mask overlay" and toggle["lines"] == 1 and toggle["inside"] and toggle["beside"], toggle
    assert toggle["height"] < 24, toggle
    # narrower than the shipped workflow's node: still one line, inside the node
    canvas.evaluate("(id) => { const n = window.app.graph.getNodeById(id); n.setSize([300, n.size[1]]);"
                    " window.app.graph.setDirtyCanvas(true, true); }", render)
    canvas.wait_for_timeout(400)
    narrow = canvas.evaluate(TOGGLE_JS, render)
    canvas.screenshot(path=str(artifacts / "previews_anchor_narrow.png"))
    assert narrow["lines"] == 1 and narrow["inside"] and narrow["beside"], narrow
    assert_plays(canvas.evaluate(PLAYER_JS, render), ANCHOR_FRAMES, "narrow")

    # a reload: the same graph from the browser's storage, its previews from the server
    canvas.reload(wait_until="domcontentloaded")
    ready(canvas)
    assert node_ids(canvas) == ids
    centre_on(canvas, render)
    assert_plays(player(canvas, render, ANCHOR_FRAMES), ANCHOR_FRAMES, "after a reload")
    canvas.screenshot(path=str(artifacts / "previews_anchor_reloaded.png"))
    centre_on(canvas, trajectory)
    assert_points(canvas, trajectory, "after a reload")
    canvas.screenshot(path=str(artifacts / "previews_editor_reloaded.png"))

    # the same prompt twice: the second is cached, the server sends these nodes nothing; the previews stay.
    # (The first runs again: once a video preview widget exists, the frontend sends its value in the prompt,
    # which changes ComfyUI's cache key. A cached run in a page that had nothing: the Stage 2 test.)
    queue_and_wait(canvas, comfy, 1)
    queue_and_wait(canvas, comfy, 2)
    assert {str(render), str(trajectory)} <= cached_nodes(comfy)[-1]
    centre_on(canvas, render)
    assert_plays(player(canvas, render, ANCHOR_FRAMES), ANCHOR_FRAMES, "after a cached run")
    assert_points(canvas, trajectory, "after a cached run")

    # a new tab of the same browser: the graph from local storage, the previews again
    tab = new_tab(browser, canvas)
    open_frontend(tab, comfy)
    assert node_ids(tab) == ids
    centre_on(tab, render)
    assert_plays(player(tab, render, ANCHOR_FRAMES), ANCHOR_FRAMES, "in a new tab")
    tab.screenshot(path=str(artifacts / "previews_anchor_new_tab.png"))
    centre_on(tab, trajectory)
    assert_points(tab, trajectory, "in a new tab")

    # the Vue node renderer: the restored player in its Vue node
    set_vue_nodes(canvas, True)
    try:
        canvas.reload(wait_until="domcontentloaded")
        ready(canvas)
        canvas.wait_for_selector(f"[data-node-id='{render}']", timeout=30_000)
        centre_on(canvas, render)
        vue = player(canvas, render, ANCHOR_FRAMES)
        canvas.screenshot(path=str(artifacts / "previews_anchor_vue_nodes.png"))
        assert_plays(vue, ANCHOR_FRAMES, "Vue nodes")
        assert canvas.evaluate(TOGGLE_JS, render)["lines"] == 1
        assert_points(canvas, trajectory, "Vue nodes")
    finally:
        set_vue_nodes(canvas, False)  # saved on the server: leave it as the other tests expect
    for page in (canvas, tab):
        assert pack_problems(page.messages) == [], page.messages
    tab.context.close()


@pytest.fixture
def tiny_svd(comfy):
    folder = comfy.base / "models" / "diffusers" / "tiny-svd"
    if not folder.exists():
        save_tiny_svd_folder(folder)
    return "diffusers/tiny-svd"


# Stage 2 on cheap inputs: (id, type, widget values, linked inputs {name: [node id, output slot]})
STAGE2 = [
    (1, "EmptyImage", {"width": 64, "height": 64, "batch_size": 4, "color": 0x3366AA}, {}),
    (8, "EmptyImage", {"width": 64, "height": 64, "batch_size": 4, "color": 0xFFFFFF}, {}),
    (2, "ImageToMask", {"channel": "red"}, {"image": [8, 0]}),  # all valid, one mask per frame
    (3, "ReCaptureLoadSVD", {"model": "diffusers/tiny-svd", "dtype": "fp32"}, {}),
    (4, "ReCaptureTrainMaskedLoRA", {"steps": 3, "rank": 4, "seed": 0, "lora_name": "previews"},
     {"svd": [3, 0], "anchor": [1, 0], "mask": [2, 0], "source": [1, 0]}),
    (5, "ReCaptureSVDDualLoRASample", {"steps": 2, "seed": 0}, {"svd": [3, 0], "lora": [4, 0], "anchor": [1, 0]}),
    (6, "ReCaptureSDEditRefine", {"steps": 2, "seed": 0, "strength": 0.6}, {"svd": [3, 0], "lora": [4, 0], "frames": [5, 0]}),
    (7, "PreviewImage", {}, {"images": [6, 0]}),
]
BUILD_JS = """([nodes, graphId]) => {
  const app = window.app, made = {};
  app.graph.clear(); app.graph.id = graphId;
  nodes.forEach(([id, type, widgets], i) => {
    const n = LiteGraph.createNode(type); n.id = id; app.graph.add(n); n.pos = [40 + (i % 4) * 440, 40 + Math.floor(i / 4) * 520];
    for (const [k, v] of Object.entries(widgets)) {
      const w = n.widgets.find((w) => w.name === k);
      if (!w) throw new Error(`${type} has no widget ${k}`);
      w.value = v;
    }
    for (const w of n.widgets ?? []) if (w.name === 'control_after_generate') w.value = 'fixed';
    made[id] = n;
  });
  for (const [id, , , links] of nodes)
    for (const [name, [from, slot]] of Object.entries(links))
      made[from].connect(slot, made[id], made[id].inputs.findIndex((i) => i.name === name));
  app.graph.setDirtyCanvas(true, true);
}"""


def loss_image(page, comfy, node_id: int) -> np.ndarray:
    from PIL import Image

    images = page.evaluate("(id) => window.app.nodeOutputs[String(id)]?.images ?? []", node_id)
    assert len(images) == 1, images
    r = requests.get(comfy.url + "/view", params=images[0], timeout=30)
    r.raise_for_status()
    return np.array(Image.open(io.BytesIO(r.content)).convert("RGB"))


def shown_loss_image(page, node_id: int) -> dict:
    """The loss picture as the node shows it (the classic canvas draws ``node.imgs``)."""
    page.wait_for_function("(id) => window.app.graph.getNodeById(id).imgs?.[0]?.naturalWidth > 0", arg=node_id,
                           timeout=30_000)
    return page.evaluate("(id) => { const i = window.app.graph.getNodeById(id).imgs[0];"
                         " return {w: i.naturalWidth, h: i.naturalHeight, src: i.src}; }", node_id)


def test_stage2_previews_survive_a_reload_and_the_chart_says_what_the_status_line_says(
        empty_history, tiny_svd, canvas, comfy, artifacts):
    from recapture.loss_plot import loss_curve_header, loss_curve_image

    canvas.evaluate(BUILD_JS, [STAGE2, str(uuid.uuid4())])
    queue_and_wait(canvas, comfy, 0)
    canvas.evaluate("() => { window.app.canvas.ds.scale = 0.6; window.app.canvas.ds.offset = [0, 0];"
                    " window.app.graph.setDirtyCanvas(true, true); }")
    canvas.wait_for_timeout(500)
    canvas.screenshot(path=str(artifacts / "previews_stage2_after_run.png"))

    # the status line under Train Masked LoRA and its loss picture: the same last losses, the same digits
    status = canvas.evaluate("(id) => window.app.graph.getNodeById(id).widgets.find((w) => w.name === '%s')?.value"
                             % PROGRESS_TEXT, 4)
    match = re.fullmatch(r"step (\d+)/\1 · temporal loss (\d+\.\d{4}) · spatial (\d+\.\d{4})", status or "")
    assert match, status
    steps, temporal, spatial = int(match[1]), float(match[2]), float(match[3])
    picture = loss_image(canvas, comfy, 4)
    assert picture.shape == (256, 512, 3)
    # the top band (title, step count, legend) depends only on the step count and the last losses: drawn
    # here from the status line's numbers, it is the node's, pixel for pixel (the node saves the picture
    # as ComfyUI's preview does: 255 * value, cut to 8 bits)
    expected = np.clip(255.0 * loss_curve_image([(temporal, spatial)] * steps).numpy(), 0, 255).astype(np.uint8)
    header = loss_curve_header()
    assert (picture[:header] == expected[:header]).all(), np.argwhere(picture[:header] != expected[:header])[:5]
    shown_loss_image(canvas, 4)
    name = canvas.evaluate("() => window.app.nodeOutputs['4'].images[0].filename")

    for node_id in (5, 6):
        state = canvas.evaluate(PLAYER_JS, node_id)
        assert state["frames"] == 4 and state["natural"] > 0 and not state["hint"], state

    canvas.reload(wait_until="domcontentloaded")
    ready(canvas)
    canvas.evaluate("() => { window.app.canvas.ds.scale = 0.6; window.app.canvas.ds.offset = [0, 0];"
                    " window.app.graph.setDirtyCanvas(true, true); }")
    after = shown_loss_image(canvas, 4)
    centre_on(canvas, 4)
    canvas.screenshot(path=str(artifacts / "previews_stage2_reloaded_loss.png"))
    assert (after["w"], after["h"]) == (512, 256) and f"filename={name}&" in after["src"], (after, name)
    assert (loss_image(canvas, comfy, 4) == picture).all()
    for node_id in (5, 6):
        centre_on(canvas, node_id)
        state = player(canvas, node_id, 4)
        canvas.screenshot(path=str(artifacts / f"previews_stage2_reloaded_{node_id}.png"))
        assert_plays(state, 4, f"node {node_id} after a reload")

    # a page that loaded before the run was in the history (as when another tab was still running it):
    # empty at first, its previews come with its own run of the same prompt, which is cached
    canvas.route("**/recapture/last_outputs", lambda route: route.fulfill(json={"outputs": {}}))
    canvas.reload(wait_until="domcontentloaded")
    ready(canvas)
    canvas.wait_for_timeout(1000)
    for node_id in (5, 6):
        empty = canvas.evaluate(PLAYER_JS, node_id)
        assert empty["frames"] == 0 and empty["hint"], empty
    assert canvas.evaluate("() => window.app.nodeOutputs['4']") is None
    canvas.unroute("**/recapture/last_outputs")
    queue_and_wait(canvas, comfy, 1)
    assert {"4", "5", "6"} <= cached_nodes(comfy)[-1]
    assert shown_loss_image(canvas, 4)["w"] == 512
    for node_id in (5, 6):
        centre_on(canvas, node_id)
        assert_plays(player(canvas, node_id, 4), 4, f"node {node_id} after a cached run")
    canvas.screenshot(path=str(artifacts / "previews_stage2_cached_run.png"))
    assert pack_problems(canvas.messages) == [], canvas.messages
