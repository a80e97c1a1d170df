"""HTTP routes of the pack, for its frontend: thin wrappers around the ``recapture`` library."""

from __future__ import annotations

import json
import logging

from aiohttp import web

from ..recapture import camera
from ..recapture.config import CameraConfig
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


async def camera_path(request: web.Request) -> web.Response:
    """``POST /recapture/camera_path`` with the Camera Trajectory node's widget values ``FIELDS`` ->
    ``{"path": camera file JSON, "source": "custom" | "file" | "preset", "description": caption,
    "pivot_distance": number or null, "source_fov_deg": number}``: the path the node will render, so the camera editor draws it.
    Bad values, bad files and names outside the input folder -> HTTP 400 ``{"error": message}``."""
    try:
        params = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return web.json_response({"error": f"the body must be JSON: {FIELDS}"}, status=400)
    if not isinstance(params, dict):
        return web.json_response({"error": f"the request must be a JSON object {FIELDS}"}, status=400)
    try:
        choice = _choice(params)
    except (ValueError, OSError) as e:  # CameraPathError, input_path's refusal, an unreadable file
        return web.json_response({"error": str(e)}, status=400)
    return web.json_response({"path": camera.path_to_json(choice.path), "source": choice.source,
                              "description": choice.description, "pivot_distance": choice.pivot_distance,
                              "source_fov_deg": choice.source_fov_deg})


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
