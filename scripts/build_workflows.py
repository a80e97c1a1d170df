"""Builds the shipped workflows in the real ComfyUI canvas and saves what the canvas serialises.

Run after changing a node's inputs: `python scripts/build_workflows.py` (needs `make setup`). The graph
is made with the frontend's own LiteGraph API in headless Chromium, so `workflows/*.json` are exactly
the UI format a person's canvas saves, with the widget order of the current node schemas.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

from comfy_harness import REPO, ComfyServer

sys.path.insert(0, str(REPO))
from recapture.demo_clip import write_demo_clip  # noqa: E402
import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

# A graph spec: nodes in columns (stacked top to bottom with their real sizes), widget values by name,
# links by output and input name, groups by member node ids, notes placed in a column too.
ANCHOR_ONLY = {
    "file": "ReCapture - anchor video and mask.json",
    "overview": "anchor_workflow.png",
    "nodes": [
        {"id": 1, "type": "ReCaptureLoadVideo", "col": 0, "title": "Source video",
         "widgets": {"video": "recapture_sample.mp4", "frame_count": 14, "width": 1024, "height": 576}},
        {"id": 2, "type": "ReCaptureLoadVideo", "col": 0, "title": "Depth (16-bit inverse-depth frames)",
         "widgets": {"video": "recapture_sample.mp4", "frames_folder": "recapture_sample_depth/", "frame_count": 14,
                     "width": 1024, "height": 576}},
        {"id": 3, "type": "ReCaptureDepthToPointCloud", "col": 1,
         "widgets": {"depth_kind": "inverse", "near": "@near", "far": "@far", "fov_deg": 60.0}},
        {"id": 11, "type": "Preview3D", "col": 1, "title": "Point cloud of frame 0",
         "min_size": [360, 420]},  # its 3D view has no size of its own: room to see the cloud
        {"id": 4, "type": "ReCaptureCameraTrajectory", "col": 2,
         "widgets": {"preset": "orbit_left", "amount": 15.0, "easing": "ease_in_out"}},
        {"id": 5, "type": "ReCaptureRenderAnchor", "col": 2},
        {"id": 6, "type": "CreateVideo", "col": 3, "title": "Anchor video"},
        {"id": 7, "type": "SaveVideo", "col": 3, "widgets": {"filename_prefix": "recapture/anchor"}},
        {"id": 8, "type": "MaskToImage", "col": 4},
        {"id": 9, "type": "CreateVideo", "col": 4, "title": "Mask video"},
        {"id": 10, "type": "SaveVideo", "col": 4, "widgets": {"filename_prefix": "recapture/mask"}},
    ],
    "links": [
        (1, "frames", 3, "frames"), (2, "frames", 3, "depth"), (3, "point_cloud", 4, "point_cloud"),
        (3, "point_cloud", 5, "point_cloud"), (4, "camera_path", 5, "camera_path"),
        (5, "anchor", 6, "images"), (1, "fps", 6, "fps"), (6, "VIDEO", 7, "video"),
        (5, "mask", 8, "mask"), (8, "IMAGE", 9, "images"), (1, "fps", 9, "fps"), (9, "VIDEO", 10, "video"),
        (3, "preview_file", 11, "model_file"),
    ],
    "groups": [
        {"title": "1. Clip and its depth", "nodes": [1, 2]},
        {"title": "2. Point cloud", "nodes": [3, 11]},
        {"title": "3. New camera path and anchor", "nodes": [4, 5]},
        {"title": "4. Save anchor and mask videos (output/recapture/)", "nodes": [6, 7, 8, 9, 10]},
    ],
    "notes": [
        {"col": 2, "size": [400, 320], "text": (
            "ReCapture Stage 1: the anchor video.\n\n"
            "Each frame plus its depth becomes a point cloud in that frame's camera, and is rendered from "
            "the new camera. The anchor has holes where the new view sees what the source never saw; the "
            "mask is white where a point landed.\n\n"
            "This runs on the bundled sample (recapture_sample.mp4 and its exact depth). To put it into "
            "ComfyUI's input folder, run this with ComfyUI's Python in ComfyUI/custom_nodes/ComfyUI-ReCapture:\n"
            "python -m recapture demo-sample --out ../../input\n\n"
            "For your own clip: replace 'Depth' with ReCapture Estimate Depth or any depth node "
            "(depth_kind inverse, bright = near), and set near/far to the scene's rough distances.")},
    ],
}


SVD_FILE = "svd_xt.safetensors"  # the single-file checkpoint ComfyUI users keep in models/checkpoints
SVD_CHOICE = f"checkpoints/{SVD_FILE}"

FULL = {
    "file": "ReCapture - full method with SVD.json",
    "overview": "full_workflow.png",
    "nodes": ANCHOR_ONLY["nodes"][:6] + [
        {"id": 6, "type": "CreateVideo", "col": 3, "title": "Anchor video"},
        {"id": 7, "type": "SaveVideo", "col": 3, "widgets": {"filename_prefix": "recapture/anchor"}},
        {"id": 8, "type": "MaskToImage", "col": 3},
        {"id": 9, "type": "CreateVideo", "col": 3, "title": "Mask video"},
        {"id": 10, "type": "SaveVideo", "col": 3, "widgets": {"filename_prefix": "recapture/mask"}},
        {"id": 12, "type": "ReCaptureLoadSVD", "col": 4, "widgets": {"model": SVD_CHOICE, "dtype": "auto"}},
        {"id": 13, "type": "ReCaptureTrainMaskedLoRA", "col": 4,
         "widgets": {"steps": 400, "learning_rate": 5e-4, "rank": 16, "lora_name": "recapture"}},
        {"id": 14, "type": "ReCaptureSVDDualLoRASample", "col": 5, "widgets": {"steps": 25}},
        {"id": 15, "type": "ReCaptureSDEditRefine", "col": 5, "widgets": {"strength": 0.6, "steps": 25}},
        {"id": 16, "type": "CreateVideo", "col": 6, "title": "Re-filmed video"},
        {"id": 17, "type": "SaveVideo", "col": 6, "widgets": {"filename_prefix": "recapture/recaptured"}},
        {"id": 18, "type": "PreviewImage", "col": 6, "title": "Training loss"},
    ],
    "links": ANCHOR_ONLY["links"] + [
        (12, "svd", 13, "svd"), (5, "anchor", 13, "anchor"), (5, "mask", 13, "mask"), (1, "frames", 13, "source"),
        (12, "svd", 14, "svd"), (13, "lora", 14, "lora"), (5, "anchor", 14, "anchor"), (1, "frames", 14, "source"),
        (5, "mask", 14, "mask"),
        (12, "svd", 15, "svd"), (13, "lora", 15, "lora"), (14, "frames", 15, "frames"),
        (15, "refined", 16, "images"), (1, "fps", 16, "fps"), (16, "VIDEO", 17, "video"),
        (13, "loss_curve", 18, "images"),
    ],
    "groups": ANCHOR_ONLY["groups"][:3] + [
        {"title": "4. Save anchor, mask", "nodes": [6, 7, 8, 9, 10]},
        {"title": "5. Fine-tune SVD", "nodes": [12, 13]},
        {"title": "6. Sample, refine", "nodes": [14, 15]},
        {"title": "7. Save the video", "nodes": [16, 17, 18]},
    ],
    "pictures": {"5.": "stage2_train.png", "6.": "stage2_sample.png"},
    "notes": [
        {"col": 2, "size": [400, 360], "text": (
            "ReCapture: re-film a video along a new camera path.\n\n"
            "1-3: the anchor video (the scene's point cloud seen from the new camera) and its validity mask.\n"
            "5: SVD learns the anchor's motion (temporal LoRA, loss only where the mask is white) and the "
            "source's look (spatial LoRA); the LoRAs land in models/loras/recapture/.\n"
            "6: sampling with both LoRAs fills the holes; SDEdit with the spatial LoRA removes blur.\n\n"
            "Needs models/checkpoints/" + SVD_FILE + " (or pick a diffusers folder in Load SVD). "
            "For your own clip, replace 'Depth' with ReCapture Estimate Depth or any depth node; the bundled "
            "sample goes into ComfyUI's input folder with ComfyUI's Python, in "
            "ComfyUI/custom_nodes/ComfyUI-ReCapture:\n"
            "python -m recapture demo-sample --out ../../input\n\n"
            "GPU with 12 GB or less: turn on low_memory in 5 and 6 (and decode_chunk_size 2), or use a "
            "smaller size in Source video and Depth.")},
    ],
}


def _changed(nodes: list[dict], widgets: dict[int, dict]) -> list[dict]:
    """``nodes`` with some nodes' widget values changed (by node id)."""
    return [node | {"widgets": node.get("widgets", {}) | widgets[node["id"]]} if node["id"] in widgets else node
            for node in nodes]


LONG_CLIP = {
    "file": "ReCapture - long clip with steady depth.json",
    "overview": "long_clip_workflow.png",
    "nodes": _changed(FULL["nodes"], {
        1: {"frame_count": 0}, 2: {"frame_count": 0}, 3: {"align_depth": True},
        13: {"window_overlap": 4}, 14: {"window_overlap": 4}, 15: {"window_overlap": 4}}),
    "links": FULL["links"],
    "groups": [{"title": "1. The whole clip and its depth", "nodes": [1, 2]},
               {"title": "2. Point cloud from steady depth", "nodes": [3, 11]}] + FULL["groups"][2:4] + [
        {"title": "5. Fine-tune SVD, a window at a time", "nodes": [12, 13]},
        {"title": "6. Sample, refine in windows", "nodes": [14, 15]},
        FULL["groups"][6]],
    "notes": [
        {"col": 2, "size": [400, 430], "text": (
            "ReCapture on a whole clip, longer than SVD's window.\n\n"
            "frame_count 0 in both loaders takes every frame. align_depth in Depth To Point Cloud removes the "
            "scale and shift that per-frame depth models (Depth Anything...) let drift, so the anchor does not "
            "breathe; exact or metric depth needs none.\n"
            "5: each training step learns one window of the anchor (25 frames for svd_xt, 14 for svd); the "
            "spatial LoRA sees frames from the whole clip.\n"
            "6: every denoising step runs each window and blends them over window_overlap frames, so there "
            "are no seams. Memory does not grow with the clip; time grows with the windows: 60 frames are 3 "
            "windows of 25 with overlap 4, each sampling step costs 3 times a 25-frame clip's.\n\n"
            "The bundled 60-frame sample goes into ComfyUI's input folder with ComfyUI's Python, in "
            "ComfyUI/custom_nodes/ComfyUI-ReCapture:\n"
            "python -m recapture demo-sample --out ../../input\n\n"
            "Needs models/checkpoints/" + SVD_FILE + ". GPU with 12 GB or less: low_memory on in 5 and 6.")},
    ],
}


def build(server: ComfyServer, spec: dict, values: dict, out: Path) -> None:
    """Builds ``spec`` twice: first to measure each node as a run leaves it (its previews, players and
    progress text) in the classic canvas and in the Vue node renderer, then laid out with that room."""
    from playwright.sync_api import sync_playwright

    executable = shutil.which("chromium")
    run = run_outputs(server.base)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        page = open_page(browser, server)
        resolved = json.loads(json.dumps(spec), object_hook=lambda d: {
            k: (values[v[1:]] if isinstance(v, str) and v.startswith("@") else v) for k, v in d.items()})
        classic = page.evaluate("""async ([spec, run]) => {
            const r = window.recaptureBuild;
            await r.build(spec, null);
            const graph = r.serialize();
            await window.app.loadGraphData(graph);  // as a person opens the file (and runs it)
            await r.wait(2500);
            await r.afterRun(run);
            return {sizes: await r.measure(), graph};
        }""", [resolved, run])
        # on a page of its own: switching back leaves a notice on the page (kept out of the pictures)
        vue_page = open_page(browser, server)
        set_vue_nodes(vue_page, True)
        vue = vue_page.evaluate("""async ([graph, run]) => {
            const r = window.recaptureBuild;
            await window.app.loadGraphData(graph);
            await r.wait(2500);  // the video upload's preview loads again
            await r.afterRun(run);
            return await r.measure();
        }""", [classic["graph"], run])
        set_vue_nodes(vue_page, False)  # the setting is saved on the server
        vue_page.close()
        room = {i: {"classic": classic["sizes"][i], "vue": vue[i]} for i in classic["sizes"]}
        page.close()
        page = open_page(browser, server)  # a fresh one: no outputs of the measuring run in the pictures
        workflow = page.evaluate("async ([spec, room]) => { const r = window.recaptureBuild; "
                                 "await r.build(spec, room); return r.serialize(); }", [resolved, room])
        for prefix, picture in spec.get("pictures", {}).items():
            group_picture(page, prefix, REPO / "web" / "docs" / picture)
        page.set_viewport_size({"width": 2800, "height": 1400})
        page.add_style_tag(content="[class*='minimap'] { display: none !important; }")
        page.wait_for_timeout(500)
        overview = REPO / "docs" / "images" / spec["overview"]
        overview_picture(page, overview)
        browser.close()
    out.write_text(json.dumps(workflow, indent=2) + "\n")
    print(f"wrote {out}")
    template_thumbnail(overview, out.with_suffix(".jpg"))


def open_page(browser, server: ComfyServer):
    page = browser.new_page(viewport={"width": 1600, "height": 1400})
    page.goto(server.url)
    page.wait_for_function("() => window.app && window.app.graph && window.app.canvas", timeout=60_000)
    page.wait_for_timeout(1000)
    page.evaluate(HELPERS_JS)
    return page


def set_vue_nodes(page, on: bool) -> None:
    """The frontend's Vue node renderer ("Nodes 2.0") on or off, as its setting does."""
    page.evaluate("async (on) => { await window.app.extensionManager.setting.set('Comfy.VueNodes.Enabled', on); }", on)
    page.wait_for_timeout(1000)


def run_outputs(base: Path) -> dict:
    """What a run of the workflows shows in their nodes, as the server's messages carry it: ui outputs
    (a saved video, the loss curve, the player's frames) and the progress text of each node that reports
    progress. Made of files of the real sizes in the server's folders (the sample clip is in input/)."""
    from PIL import Image

    from recapture.loss_plot import loss_curve_image

    temp = base / "temp"
    temp.mkdir(parents=True, exist_ok=True)
    curve = loss_curve_image([(0.2 / (1 + i), 0.4 / (1 + i)) for i in range(40)])
    Image.fromarray((curve.numpy() * 255).round().astype("uint8")).save(temp / "layout_loss.png")
    frames = []
    for i in range(2):
        Image.new("RGB", (512, 288), (40 * i, 90, 160)).save(temp / f"layout_frame_{i}.png")
        frames.append({"filename": f"layout_frame_{i}.png", "subfolder": "", "type": "temp"})
    video = {"images": [{"filename": "recapture_sample.mp4", "subfolder": "", "type": "input"}], "animated": [True]}
    image = {"images": [{"filename": "layout_loss.png", "subfolder": "", "type": "temp"}]}
    player = {"recapture_player": [{"frames": frames, "overlay": frames}]}
    outputs = {"SaveVideo": video, "PreviewImage": image, "ReCaptureTrainMaskedLoRA": image,
               "ReCaptureRenderAnchor": player, "ReCaptureSVDDualLoRASample": player, "ReCaptureSDEditRefine": player}
    return {"outputs": outputs, "progress_text": PROGRESS_TEXT}


# The longest progress text each node shows while it runs (nodes/_api.py Progress: unit, count, detail, ETA).
PROGRESS_TEXT = {
    "ReCaptureLoadVideo": "frame 120/240 · ETA 12 s",
    "ReCaptureEstimateDepth": "frame 120/240 · ETA 1m 12s",
    "ReCaptureRenderAnchor": "frame 120/240 · ETA 12 s",
    "ReCaptureTrainMaskedLoRA": "step 237/400 · temporal loss 0.0123 · spatial 0.0456 · ETA 12m 34s",
    "ReCaptureSVDDualLoRASample": "step 12/25 · ETA 1m 05s",
    "ReCaptureSDEditRefine": "step 8/15 · ETA 40 s",
}


def template_thumbnail(overview: Path, out: Path, size: tuple[int, int] = (800, 600)) -> None:
    """The picture ComfyUI's template browser shows for a workflow (``<name>.jpg`` beside ``<name>.json``):
    the overview picture, fitted into ``size`` on the canvas' colour."""
    from PIL import Image

    with Image.open(overview) as picture:
        picture = picture.convert("RGB")
        picture.thumbnail(size, Image.LANCZOS)
        canvas = Image.new("RGB", size, picture.getpixel((2, 2)))
        canvas.paste(picture, ((size[0] - picture.width) // 2, (size[1] - picture.height) // 2))
        canvas.save(out, "JPEG", quality=88, optimize=True)
    print(f"wrote {out}")


def overview_picture(page, out: Path) -> None:
    """The whole graph just built, fitted into the canvas (the README's pictures)."""
    box = page.evaluate("""() => {
        const app = window.app, canvas = app.canvas, rect = canvas.canvas.getBoundingClientRect();
        canvas.deselectAll?.();  // no selection toolbox in the picture
        canvas.show_info = false;  // nor the FPS corner
        const top = 130, left = 70, right = 10, bottom = 40;  // clear of the top bar, side bar, canvas info
        const boxes = [...app.graph._nodes.map(n => [n.pos[0], n.pos[1] - 30, n.size[0], n.size[1] + 30]),
                       ...app.graph._groups.map(g => g._bounding)];
        const x0 = Math.min(...boxes.map(b => b[0])), y0 = Math.min(...boxes.map(b => b[1]));
        const x1 = Math.max(...boxes.map(b => b[0] + b[2])), y1 = Math.max(...boxes.map(b => b[1] + b[3]));
        const width = rect.width - left - right, height = rect.height - top - bottom;
        const scale = Math.min(width / (x1 - x0 + 40), height / (y1 - y0 + 40));
        canvas.ds.scale = scale;
        canvas.ds.offset = [(left + 20) / scale - x0, (top + 20) / scale - y0];
        canvas.setDirty(true, true);
        return {x: rect.left + left, y: rect.top + top, width: Math.ceil((x1 - x0 + 40) * scale),
                height: Math.ceil((y1 - y0 + 40) * scale)};
    }""")
    page.wait_for_timeout(800)
    page.screenshot(path=str(out), clip=box)
    print(f"wrote {out}")


def group_picture(page, title_prefix: str, out: Path) -> None:
    """A screenshot of one group of the graph just built (the help pages' pictures of Stage 2 nodes)."""
    box = page.evaluate("""(prefix) => {
        const canvas = window.app.canvas, group = window.app.graph._groups.find(g => g.title.startsWith(prefix));
        const [x, y, w, h] = group._bounding;
        canvas.ds.scale = 1;
        canvas.ds.offset = [160 - x, 160 - y];
        canvas.setDirty(true, true);
        const rect = canvas.canvas.getBoundingClientRect();
        return {x: rect.left + 150, y: rect.top + 150, width: w + 20, height: h + 20};
    }""", title_prefix)
    page.wait_for_timeout(800)
    page.screenshot(path=str(out), clip=box)
    print(f"wrote {out}")


HELPERS_JS = """
() => {
  const app = window.app, api = window.comfyAPI.api.api;
  const wait = (ms) => new Promise((ok) => setTimeout(ok, ms));
  const MIN_WIDTH = 360, COL_GAP = 60, ROW_GAP = 60, TOP = 80, LEFT = 40, PAD = 20, TITLE = 50;
  // The Vue node renderer opens a layout made in the classic canvas scaled by this (the frontend's
  // ensureCorrectLayoutScale: positions and sizes, nodes' and groups' tops moved up by a title first).
  const VUE_SCALE = 1.2;
  window.recaptureBuild = {
    wait,
    /** The graph of ``spec``: nodes, widget values, links, notes; placed in columns with the room that
     * ``room`` (id -> {classic, vue}: [w, h] measured after a run) says each node takes, else its own size. */
    async build(spec, room) {
      app.graph.clear();
      const byId = {}, T = LiteGraph.NODE_TITLE_HEIGHT;
      for (const n of spec.nodes) {
        const node = LiteGraph.createNode(n.type);
        if (!node) throw new Error('unknown node type ' + n.type);
        node.id = n.id;
        app.graph.add(node);
        if (n.title) node.title = n.title;
        for (const [name, value] of Object.entries(n.widgets || {})) {
          const w = node.widgets.find(w => w.name === name);
          if (!w) throw new Error(n.type + ' has no widget ' + name);
          w.value = value;
          w.callback?.(value, app.canvas, node);  // as a person's edit: e.g. the video upload shows its preview
        }
        // fixed seeds: re-queueing reuses the trained LoRAs from ComfyUI's cache instead of retraining
        const control = node.widgets?.find(w => w.name === 'control_after_generate');
        if (control) control.value = 'fixed';
        byId[n.id] = node;
      }
      const items = spec.nodes.map(n => ({id: n.id, col: n.col, min: n.min_size || [0, 0]}));
      const firstNote = Math.max(...spec.nodes.map(n => n.id)) + 1;
      (spec.notes || []).forEach((note, i) => {
        const node = LiteGraph.createNode('Note');
        node.id = firstNote + i;
        app.graph.add(node);
        node.widgets[0].value = note.text;
        byId[node.id] = node;
        items.push({id: node.id, col: note.col, min: note.size});
      });
      for (const [src, out, dst, inp] of spec.links) {
        const s = byId[src], d = byId[dst];
        const o = s.outputs.findIndex(x => x.name === out || x.type === out);
        if (o < 0) throw new Error('no output ' + out + ' on ' + s.type);
        const i = d.inputs.findIndex(x => x.name === inp);
        if (i < 0) throw new Error('no input ' + inp + ' on ' + d.type);
        if (!s.connect(o, d, i)) throw new Error('cannot link ' + out + ' -> ' + inp);
      }
      // Previews (the video upload's player, our views) load asynchronously: size the nodes after them.
      await wait(2500);
      // What each node takes below its position, in classic units: in the classic canvas its size after a
      // run; under Vue nodes its box after a run (title included, scaled back), whichever is larger.
      const room_of = {}, colWidth = {};
      for (const it of items) {
        const node = byId[it.id], own = node.computeSize();
        const size = [Math.max(own[0], MIN_WIDTH, it.min[0]), Math.max(own[1], it.min[1])];
        const classic = room?.[it.id]?.classic ?? size, vue = room?.[it.id]?.vue;
        node.size = [Math.max(size[0], classic[0]), Math.max(size[1], classic[1])];
        const r = {width: node.size[0], below: node.size[1], step: node.size[1] + T};
        if (vue) {
          r.width = Math.max(r.width, vue[0] / VUE_SCALE);
          r.below = Math.max(r.below, vue[1] / VUE_SCALE);
          r.step = Math.max(r.step, vue[1] / VUE_SCALE);
        }
        room_of[it.id] = r;
        colWidth[it.col] = Math.max(colWidth[it.col] ?? 0, r.width);
      }
      const colX = {}, colY = {};
      let x = LEFT;
      for (const col of Object.keys(colWidth).map(Number).sort((a, b) => a - b)) {
        colX[col] = x;
        x += colWidth[col] + COL_GAP;
      }
      for (const it of items) {
        const y = colY[it.col] ?? TOP;
        byId[it.id].pos = [colX[it.col], y];
        colY[it.col] = y + room_of[it.id].step + ROW_GAP;
      }
      for (const g of spec.groups || []) {
        const members = g.nodes.map(id => byId[id]);
        const x0 = Math.min(...members.map(n => n.pos[0])) - PAD;
        const y0 = Math.min(...members.map(n => n.pos[1])) - T - TITLE;
        const x1 = Math.max(...members.map(n => n.pos[0] + room_of[n.id].width)) + PAD;
        const y1 = Math.max(...members.map(n => n.pos[1] + room_of[n.id].below)) + PAD;
        const group = new LiteGraph.LGraphGroup(g.title);
        group.pos = [x0, y0];
        group.size = [x1 - x0, y1 - y0];
        app.graph.add(group);
      }
      app.graph.setDirtyCanvas(true, true);
    },
    /** What a run shows in the nodes, sent through the frontend's own handlers of the server's messages. */
    async afterRun(run) {
      for (const node of app.graph._nodes) {  // as a run's messages come: spaced in time
        const id = String(node.id), output = run.outputs[node.type], text = run.progress_text[node.type];
        if (text) api.dispatchCustomEvent('progress_text', {nodeId: id, text});
        await wait(300);
        if (output) api.dispatchCustomEvent('executed', {node: id, display_node: id, output, prompt_id: 'layout'});
        await wait(300);
      }
      await wait(3000);  // the previews load and size their nodes
    },
    /** Each node's [width, height] in graph units: its size in the classic canvas (at least what its widgets
     * ask), its drawn box (title included) under Vue nodes; each measured at scale 1 in view, where nothing
     * is culled. */
    async measure() {
      const c = app.canvas, out = {};
      const vue = !!app.extensionManager.setting.get('Comfy.VueNodes.Enabled');
      for (const node of app.graph._nodes) {
        c.ds.scale = 1;
        c.ds.offset = [80 - node.pos[0], 150 - node.pos[1]];
        c.setDirty(true, true);
        await wait(200);
        if (vue) {
          const box = document.querySelector(`[data-node-id="${node.id}"]`).getBoundingClientRect();
          out[node.id] = [box.width / c.ds.scale, box.height / c.ds.scale];
        } else {
          out[node.id] = [node.size[0], Math.max(node.size[1], node.computeSize()[1])];  // DOM widgets keep its width
        }
      }
      return out;
    },
    serialize() {
      app.canvas.ds.scale = 0.6;
      app.canvas.ds.offset = [130, 230];  // clear of the top bar and side bar at this scale
      app.graph.setDirtyCanvas(true, true);
      // As the canvas saves a file: through JSON, which drops undefined fields (null would fail its schema).
      return JSON.parse(JSON.stringify(app.graph.serialize()));
    },
  };
}
"""


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        server = ComfyServer(base=Path(tmp))
        (Path(tmp) / "models" / "checkpoints").mkdir(parents=True)
        files = write_demo_clip(Path(tmp) / "input")
        sample = json.loads(files[-1].read_text())
        values = {"near": round(sample["near"], 4), "far": round(sample["far"], 4)}
        # the full workflow's model combo lists files by name: a placeholder of that name will do
        save_file({"placeholder": torch.zeros(1)}, str(Path(tmp) / "models" / "checkpoints" / SVD_FILE))
        with server:
            for spec in (ANCHOR_ONLY, FULL, LONG_CLIP):
                build(server, spec, values, REPO / "workflows" / spec["file"])


if __name__ == "__main__":
    main()
