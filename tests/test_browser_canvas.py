"""The real ComfyUI frontend in headless Chromium with this pack loaded."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.browser


def pack_console_errors(messages: list[dict]) -> list[dict]:
    """Console errors that come from this pack (the core frontend logs a few 404s of its own)."""
    return [m for m in messages if m["type"] == "error"
            and ("recapture" in m["text"].lower() or "recapture" in m["url"].lower())]


@pytest.fixture
def canvas(browser, comfy, artifacts):
    """A page with the canvas ready; collects console messages and page errors."""
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    messages: list[dict] = []
    page.on("console", lambda m: messages.append({"type": m.type, "text": m.text, "url": m.location.get("url", "")}))
    page.on("pageerror", lambda e: messages.append({"type": "error", "text": str(e), "url": ""}))
    page.goto(comfy.url, wait_until="domcontentloaded")
    page.wait_for_function("() => window.app && window.app.graph && window.app.canvas", timeout=60_000)
    page.wait_for_timeout(1500)
    page.messages = messages
    yield page
    page.close()


def test_extension_loads_without_console_errors(canvas, artifacts):
    names = canvas.evaluate("() => window.app.extensions.map(e => e.name)")
    assert "ReCapture.Core" in names
    canvas.screenshot(path=str(artifacts / "canvas_loaded.png"))
    assert pack_console_errors(canvas.messages) == []


def test_node_found_in_search_and_added(canvas, artifacts):
    canvas.evaluate("() => { window.app.graph.clear(); window.app.graph.setDirtyCanvas(true, true); }")
    before = 0
    # Double-clicking empty canvas opens the node search box, as a person would.
    canvas.mouse.dblclick(700, 450)
    search = canvas.locator("input[placeholder*='Search'], .comfy-vue-node-search-container input").first
    search.wait_for(state="visible", timeout=15_000)
    search.fill("ReCapture Load Video")
    canvas.wait_for_timeout(800)
    canvas.screenshot(path=str(artifacts / "node_search.png"))
    canvas.keyboard.press("Enter")
    canvas.wait_for_function(
        f"() => window.app.graph._nodes.filter(n => n.type === 'ReCaptureLoadVideo').length > {before}",
        timeout=10_000)
    node = canvas.evaluate(
        "() => { const n = window.app.graph._nodes.find(n => n.type === 'ReCaptureLoadVideo');"
        " return {title: n.title, widgets: n.widgets.map(w => w.name), color: n.color}; }")
    assert node["title"] == "ReCapture Load Video"
    assert {"video", "frame_count", "width", "height", "resize"} <= set(node["widgets"])
    assert node["color"] == "#2a3a4f"  # our extension's nodeCreated ran on it
    canvas.screenshot(path=str(artifacts / "node_added.png"))
    assert pack_console_errors(canvas.messages) == []
