"""Runs a real ComfyUI with this pack loaded and talks to it over HTTP (tests and `make demo`).

Development tooling only: the pack itself never imports this.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

REPO = Path(__file__).resolve().parents[1]
PACK_DIR_NAME = "ComfyUI-ReCapture"
DEV_HOME = Path(os.environ.get("RECAPTURE_DEV_HOME", Path.home() / ".cache" / "comfyui-recapture-dev"))
MODEL_FOLDERS = ("checkpoints", "loras", "diffusers", "depth", "clip_vision", "vae")
# Node types that exist only in the canvas and never reach the server.
FRONTEND_ONLY_NODES = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode"}


class ComfyError(RuntimeError):
    pass


def comfyui_path() -> Path:
    """The ComfyUI to run: $COMFYUI_PATH, else the one scripts/dev-setup.sh unpacked."""
    path = Path(os.environ.get("COMFYUI_PATH") or DEV_HOME / "comfyui-0.3.75")
    if not (path / "main.py").is_file():
        raise ComfyError(f"no ComfyUI at {path}: run `make setup` (or set COMFYUI_PATH to your checkout)")
    return path


def prepare_base(base: Path) -> Path:
    """A ComfyUI base folder (models, input, output, user) with this pack linked into custom_nodes."""
    for sub in ("custom_nodes", "input", "output", "user", "temp", *[f"models/{m}" for m in MODEL_FOLDERS]):
        (base / sub).mkdir(parents=True, exist_ok=True)
    # Without this the canvas opens a first-run template whose missing models cover the screen.
    settings = base / "user" / "default" / "comfy.settings.json"
    if not settings.exists():
        settings.parent.mkdir(parents=True, exist_ok=True)
        settings.write_text(json.dumps({"Comfy.TutorialCompleted": True}))
    link = base / "custom_nodes" / PACK_DIR_NAME
    if link.is_symlink() or link.exists():
        if link.resolve() != REPO:
            link.unlink()
    if not link.exists():
        link.symlink_to(REPO, target_is_directory=True)
    return base


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ComfyServer:
    """A ComfyUI process on 127.0.0.1 with its own base folder; use as a context manager."""

    base: Path
    port: int = field(default_factory=free_port)
    log_path: Path | None = None
    extra_args: tuple[str, ...] = ()
    echo_log: bool = False  # print the server's log to this terminal instead of the log file
    env: dict[str, str] = field(default_factory=dict)  # extra environment for the server process
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 180.0) -> "ComfyServer":
        prepare_base(self.base)
        self.log_path = self.log_path or self.base / "comfyui.log"
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "DO_NOT_TRACK": "1",
               "PYTHONUNBUFFERED": "1", **self.env}
        cmd = [sys.executable, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
               "--base-directory", str(self.base),
               *self.extra_args]
        log = None if self.echo_log else open(self.log_path, "w")
        # Its own session: Ctrl-C in the terminal reaches only us, and stop() ends the whole group.
        self.process = subprocess.Popen(cmd, cwd=comfyui_path(), stdout=log, stderr=subprocess.STDOUT,
                                        env=env, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ComfyError(f"ComfyUI exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                if requests.get(self.url + "/system_stats", timeout=2).ok:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.5)
        self.stop()
        raise ComfyError(f"ComfyUI did not answer within {timeout:.0f} s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGINT)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def __enter__(self) -> "ComfyServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def pack_import_errors(self) -> list[str]:
        """Log lines that say this pack failed to import."""
        text = self.log_text()
        return [line for line in text.splitlines()
                if PACK_DIR_NAME in line and ("IMPORT FAILED" in line or "Cannot import" in line)]

    # --- HTTP API ---------------------------------------------------------------------------
    def get(self, route: str, **kw) -> Any:
        r = requests.get(self.url + route, timeout=kw.pop("timeout", 30), **kw)
        r.raise_for_status()
        return r.json()

    def object_info(self, node_id: str | None = None) -> dict:
        return self.get("/object_info" + (f"/{node_id}" if node_id else ""))

    def upload_input(self, path: Path, subfolder: str = "") -> str:
        """Uploads a file into the input folder the way the canvas does; returns its name there."""
        with open(path, "rb") as f:
            r = requests.post(self.url + "/upload/image", files={"image": (path.name, f)},
                              data={"subfolder": subfolder, "overwrite": "true"}, timeout=60)
        r.raise_for_status()
        info = r.json()
        return f"{info['subfolder']}/{info['name']}" if info.get("subfolder") else info["name"]

    def queue(self, prompt: dict) -> str:
        r = requests.post(self.url + "/prompt", json={"prompt": prompt, "client_id": uuid.uuid4().hex}, timeout=60)
        if r.status_code != 200:
            raise ComfyError(f"/prompt refused the graph ({r.status_code}): {r.text}")
        return r.json()["prompt_id"]

    def wait(self, prompt_id: str, timeout: float = 600.0) -> dict:
        """Waits for a queued prompt; returns its /history entry (status and outputs)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            history = self.get(f"/history/{prompt_id}")
            if prompt_id in history and history[prompt_id].get("status", {}).get("completed") is not None:
                entry = history[prompt_id]
                if entry["status"].get("status_str") in ("success", "error"):
                    return entry
            time.sleep(0.25)
        raise ComfyError(f"prompt {prompt_id} did not finish within {timeout:.0f} s:\n{self.log_tail()}")

    def run(self, prompt: dict, timeout: float = 600.0) -> dict:
        """Queues a prompt and waits; raises with the node's error message when it failed."""
        entry = self.wait(self.queue(prompt), timeout)
        if entry["status"]["status_str"] != "success":
            raise ComfyError(f"prompt failed: {execution_error(entry)}")
        return entry


def execution_error(entry: dict) -> str:
    """The error message a node raised, as the canvas' error dialog shows it."""
    for kind, data in entry.get("status", {}).get("messages", []):
        if kind == "execution_error":
            return f"{data.get('node_type')}: {data.get('exception_message', '').strip()}"
    return json.dumps(entry.get("status"))


# --- UI (canvas) workflow -> API prompt -------------------------------------------------------
def _widget_inputs(info: dict) -> list[tuple[str, dict]]:
    """(name, spec) of the inputs that the canvas shows as widgets, in the canvas' order."""
    order = info.get("input_order", {})
    names = list(order.get("required", [])) + list(order.get("optional", []))
    specs = {**info["input"].get("required", {}), **info["input"].get("optional", {})}
    widgets = []
    for name in names:
        kind, *rest = specs[name]
        options = rest[0] if rest else {}
        if isinstance(kind, list) or kind in ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"):
            widgets.append((name, options))
    return widgets


def _has_control_widget(name: str, spec: dict) -> bool:
    """The canvas adds a 'control after generate' value after seed-like INT widgets."""
    return bool(spec.get("control_after_generate")) or name in ("seed", "noise_seed")


def ui_to_api(workflow: dict, object_info: dict) -> dict:
    """Converts a workflow saved by the canvas into the API prompt format, with the server's node specs.

    Widget values are matched to input names by the order the server reports (``input_order``), with
    the extra values the canvas stores (seed control, upload button) skipped the way the canvas does.
    """
    nodes = {n["id"]: n for n in workflow["nodes"]}
    links = {link[0]: link for link in workflow.get("links", [])}  # id, src, src_slot, dst, dst_slot, type
    prompt: dict[str, dict] = {}
    for node in workflow["nodes"]:
        if node["type"] in FRONTEND_ONLY_NODES or node.get("mode", 0) in (2, 4):
            if node.get("mode", 0) == 4:
                raise ComfyError(f"node {node['id']} ({node['type']}) is bypassed; un-bypass it or remove it")
            continue
        info = object_info.get(node["type"])
        if info is None:
            raise ComfyError(f"node type {node['type']!r} (node {node['id']}) is not installed on the server")
        inputs: dict[str, Any] = {}
        values = list(node.get("widgets_values") or [])
        if isinstance(node.get("widgets_values"), dict):
            raise ComfyError(f"node {node['id']} stores its widgets by name; not supported")
        for name, spec in _widget_inputs(info):
            if not values:
                break
            inputs[name] = values.pop(0)
            if spec.get("video_upload") or spec.get("image_upload"):
                if values and values[0] in ("image", "video"):
                    values.pop(0)  # the upload button's own value
            if _has_control_widget(name, spec) and values and values[0] in ("fixed", "increment", "decrement", "randomize"):
                values.pop(0)
        for inp in node.get("inputs", []):
            link_id = inp.get("link")
            if link_id is None:
                continue
            link = links[link_id]
            src = nodes[link[1]]
            if src["type"] in FRONTEND_ONLY_NODES:
                raise ComfyError(f"node {node['id']} input {inp['name']!r} comes from a {src['type']}: not supported")
            inputs[inp["name"]] = [str(link[1]), link[2]]
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return prompt


class Events:
    """The server's websocket messages for one client id, collected in a thread: JSON messages in
    ``messages``, progress texts as (node id, text) in ``texts``."""

    def __init__(self, server: ComfyServer):
        import aiohttp

        self.client_id, self.messages, self.texts, self._server = uuid.uuid4().hex, [], [], server
        self._loop, self._ready, self._aiohttp = asyncio.new_event_loop(), threading.Event(), aiohttp
        self._thread = threading.Thread(target=self._loop.run_until_complete, args=(self._listen(),), daemon=True)
        self._thread.start()
        assert self._ready.wait(20), "no websocket"

    async def _listen(self):
        async with self._aiohttp.ClientSession() as session:
            async with session.ws_connect(f"ws://127.0.0.1:{self._server.port}/ws?clientId={self.client_id}") as ws:
                self._ws = ws
                self._ready.set()
                async for msg in ws:
                    if msg.type == self._aiohttp.WSMsgType.TEXT:
                        self.messages.append(json.loads(msg.data))
                    elif msg.type == self._aiohttp.WSMsgType.BINARY and msg.data[:4] == b"\x00\x00\x00\x03":
                        # progress text: event 3, then the node id's length, the node id and the text
                        size = int.from_bytes(msg.data[4:8], "big")
                        self.texts.append((msg.data[8 : 8 + size].decode(), msg.data[8 + size :].decode()))

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self._ws.close(), self._loop).result(10)
        self._thread.join(10)

    def queue(self, prompt: dict) -> str:
        r = requests.post(self._server.url + "/prompt", json={"prompt": prompt, "client_id": self.client_id}, timeout=60)
        assert r.status_code == 200, r.text
        return r.json()["prompt_id"]

    def progress(self, prompt_id: str, node: str) -> list[int]:
        return [m["data"]["value"] for m in list(self.messages) if m["type"] == "progress"
                and m["data"].get("prompt_id") == prompt_id and m["data"].get("node") == node]

    def interrupt_at(self, prompt_id: str, node: str, value: int, timeout: float = 240) -> int:
        """POSTs /interrupt once ``node`` reported ``value`` steps; returns the steps reported by then."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            done = self.progress(prompt_id, node)
            if done and max(done) >= value:
                requests.post(self._server.url + "/interrupt", timeout=10).raise_for_status()
                return max(self.progress(prompt_id, node))
            time.sleep(0.02)
        raise AssertionError(f"node {node} never reported {value} steps: {self.progress(prompt_id, node)}")
