"""What the browser tests do on a ComfyUI page (the ``canvas`` fixture in conftest.py): read the pack's
console errors, hand a node preview frames, edit a widget and read back a camera editor's pixels.

A helper module, not a test module: test modules import from here (and their fixtures come from
conftest.py), never from each other; nothing here imports Playwright, so the other tiers collect without it.
"""

from __future__ import annotations


def pack_console_errors(messages: list[dict]) -> list[dict]:
    """Console errors that come from this pack.

    The core frontend logs a few 404s of its own, and its look-ups of node ids on the public registry
    (api.comfy.org/comfy-nodes/<id>) fail without a network: neither is ours.
    """
    return [m for m in messages if m["type"] == "error"
            and ("recapture" in m["text"].lower() or "recapture" in m["url"].lower())
            and not m["url"].startswith("https://api.comfy.org/")]


def temp_frames(comfy, prefix: str, size: tuple[int, int], colours: list[tuple[int, int, int]]) -> list[dict]:
    """Plain-colour PNGs in the server's temp folder, named as a node's ui output names its previews."""
    from PIL import Image

    names = [f"{prefix}_{i}.png" for i in range(len(colours))]
    for name, colour in zip(names, colours):
        Image.new("RGB", size, colour).save(comfy.base / "temp" / name)
    return [{"filename": n, "subfolder": "", "type": "temp"} for n in names]


# --- The camera editor on Camera Trajectory nodes -----------------------------------------------------------
EDITOR_BACKGROUND = (0x15, 0x18, 0x1D)

# Reads an editor's canvas: pixels that are not background, distinct colours, a coarse pixel sample for
# comparing two drawings, and how many pixels are near the source (white) and selected (green) colours.
PIXELS_JS = """(id) => {
  const editor = window.app.graph.getNodeById(id).recaptureEditor;
  const src = editor.canvas, w = src.width, h = src.height;
  const c = document.createElement('canvas'); c.width = w; c.height = h;
  const ctx = c.getContext('2d'); ctx.drawImage(src, 0, 0);
  const d = ctx.getImageData(0, 0, w, h).data;
  let drawn = 0, white = 0, green = 0; const colours = new Set(), sample = [];
  for (let i = 0; i < d.length; i += 4) {
    const r = d[i], g = d[i + 1], b = d[i + 2];
    if (Math.abs(r - %d) + Math.abs(g - %d) + Math.abs(b - %d) > 24) drawn++;
    if (r > 200 && g > 200 && b > 200) white++;
    if (g > 180 && r < 140 && b < 160) green++;
    colours.add((r >> 3) << 10 | (g >> 3) << 5 | (b >> 3));
    if ((i / 4) %% 7 === 0) sample.push(r + g + b);
  }
  return {w, h, drawn, white, green, distinct: colours.size, sample, renders: editor.renders};
}""" % EDITOR_BACKGROUND


def set_widget(page, node_id: int, name: str, value) -> None:
    """As the canvas does when a person edits a widget: new value, then its callback."""
    page.evaluate("""([id, name, value]) => {
      const w = window.app.graph.getNodeById(id).widgets.find(w => w.name === name);
      w.value = value; w.callback?.(value, window.app.canvas, window.app.graph.getNodeById(id));
    }""", [node_id, name, value])


def wait_status(page, node_id: int, text: str, timeout: int = 20_000) -> None:
    """Waits until the node's camera editor shows ``text`` in its status line, and its redraw."""
    page.wait_for_function("([id, text]) => window.app.graph.getNodeById(id)?.recaptureEditor?.status.includes(text)",
                           arg=[node_id, text], timeout=timeout)
    page.wait_for_timeout(300)  # the redraw follows the status line in the same task; let it land


def pixels(page, node_id: int) -> dict:
    """What the node's camera editor drew (``PIXELS_JS``)."""
    return page.evaluate(PIXELS_JS, node_id)


def changed(a: dict, b: dict) -> int:
    """How many sampled pixels differ between two drawings of the same editor."""
    assert len(a["sample"]) == len(b["sample"])
    return sum(abs(x - y) > 40 for x, y in zip(a["sample"], b["sample"]))


def open_node_search(page):
    """Opens the canvas' node search as a person does (a double click on the empty canvas), again if the
    page was still busy; returns its input box."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    search = page.locator("input[placeholder*='Search'], .comfy-vue-node-search-container input").first
    for attempt in range(3):
        page.mouse.dblclick(700, 450)
        try:
            search.wait_for(state="visible", timeout=8_000)
            return search
        except PlaywrightTimeout:
            if attempt == 2:
                raise
