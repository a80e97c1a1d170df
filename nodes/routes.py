"""HTTP routes of the pack, for its frontend: thin wrappers around the ``recapture`` library."""

from __future__ import annotations

import asyncio
import json
import logging

from aiohttp import web

from ..recapture import camera
from ..recapture.config import MAX_PATH_CAMERAS, MAX_PATH_REQUEST_BYTES, CameraConfig
from ._api import input_path
from .anchor import NO_FILE

_registered = False
FIELDS = "{preset, amount, easing, frames, pivot_distance, camera_file, custom_path, fov_deg, stand_in_pivot}"


def _choice(params: dict) -> camera.PathChoice:
    """The editor's widget values -> the path the node will render (``camera.choose_camera_path``).

    ``camera_file`` is a name in ComfyUI's input folder (or the node's "none" entry); ``stand_in_pivot``
    is the pivot of the node's last run, drawn while ``pivot_distance`` is 0 (automatic), or null before
    a run (1 is drawn). Raises ``ValueError`` with the message for the user."""
    name = params.get("camera_file") or NO_FILE
    if not isinstance(name, str):
        raise ValueError(f"'camera_file' must be a file name from ComfyUI's input folder, got {name!r}")
    last_pivot = params.get("stand_in_pivot")
    return camera.choose_camera_path(
        params.get("preset"), params.get("amount"), params.get("easing", CameraConfig.easing), params.get("frames"),
        params.get("pivot_distance"), camera_file=None if name == NO_FILE else input_path(name),
        custom_path=params.get("custom_path", ""), source_fov_deg=params.get("fov_deg"),
        stand_in_pivot=1.0 if last_pivot is None else last_pivot,
        stand_in_note=camera.STAND_IN_NOTE if last_pivot is None else "from the last run's depth")


def _params(body: bytes) -> dict:
    """The request body -> the widget values; ``ValueError`` with the message for the user."""
    try:
        params = json.loads(body.decode("utf-8"))
    except RecursionError:
        raise ValueError(f"the body is nested too deeply (lists or objects inside each other): send {FIELDS}") from None
    except ValueError:  # not UTF-8, not JSON
        raise ValueError(f"the body must be JSON: {FIELDS}") from None
    if not isinstance(params, dict):
        raise ValueError(f"the request must be a JSON object {FIELDS}")
    return params


def _answer(body: bytes) -> tuple[str, int]:
    """All of a request's work (parsing, reading the camera file, the path, the answer's JSON), run off
    the event loop -> (JSON text, HTTP status)."""
    try:
        choice = _choice(_params(body))
    except (ValueError, OSError) as e:  # CameraPathError, input_path's refusal, an unreadable file
        return json.dumps({"error": str(e)}), 400
    return json.dumps({"path": camera.path_to_json(choice.path), "source": choice.source,
                       "description": choice.description, "pivot_distance": choice.pivot_distance,
                       "source_fov_deg": choice.source_fov_deg}), 200


def _too_large(size: str) -> web.Response:
    return web.json_response({"error": (
        f"the request is {size} MB: at most {MAX_PATH_REQUEST_BYTES / 2**20:g} MB (a custom_path of up to "
        f"{MAX_PATH_CAMERAS} cameras): send a shorter custom_path")}, status=400)


async def _body(request: web.Request) -> bytes | None:
    """The body, or None when it is over ``MAX_PATH_REQUEST_BYTES`` (read no further than that)."""
    if (request.content_length or 0) > MAX_PATH_REQUEST_BYTES:
        return None
    chunks, size = [], 0
    while chunk := await request.content.read(2**16):
        chunks.append(chunk)
        size += len(chunk)
        if size > MAX_PATH_REQUEST_BYTES:
            return None
    return b"".join(chunks)


async def camera_path(request: web.Request) -> web.Response:
    """``POST /recapture/camera_path`` with the Camera Trajectory node's widget values ``FIELDS`` ->
    ``{"path": camera file JSON, "source": "custom" | "file" | "preset", "description": caption,
    "pivot_distance": number or null, "source_fov_deg": number}``: the path the node will render, so the camera editor draws it.
    Bad values, bad files, names outside the input folder, bodies over ``MAX_PATH_REQUEST_BYTES`` ->
    HTTP 400 ``{"error": message}``. The work runs in a worker thread: a long path never holds up the
    server's other requests."""
    body = await _body(request)
    if body is None:
        length = request.content_length
        return _too_large(f"{length / 2**20:.1f}" if length else f"over {MAX_PATH_REQUEST_BYTES / 2**20:g}")
    text, status = await asyncio.get_running_loop().run_in_executor(None, _answer, body)
    return web.Response(text=text, status=status, content_type="application/json")


def register_routes() -> None:
    """Adds the routes to ComfyUI's server; does nothing outside a running server (tests, CLI)."""
    global _registered
    try:
        import server
    except ImportError:
        return
    instance = getattr(server.PromptServer, "instance", None)
    if instance is None or _registered:
        return
    instance.routes.post("/recapture/camera_path")(camera_path)
    _registered = True
    logging.debug("[ComfyUI-ReCapture] registered /recapture/camera_path")
