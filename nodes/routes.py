"""HTTP routes of the pack, for its frontend: thin wrappers around the ``recapture`` library."""

from __future__ import annotations

import json
import logging

from aiohttp import web

from ..recapture import camera

_registered = False


async def camera_path(request: web.Request) -> web.Response:
    """``POST /recapture/camera_path`` {preset, amount, easing, frames, pivot_distance, fov_deg} -> the
    preset's path as a ReCapture camera file, so the camera editor draws what the node computes.
    Bad values -> HTTP 400 ``{"error": message}``."""
    try:
        params = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return web.json_response({"error": "the body must be JSON: {preset, amount, easing, frames, "
                                           "pivot_distance, fov_deg}"}, status=400)
    try:
        return web.json_response(camera.preset_path_json(params))
    except camera.CameraPathError as e:
        return web.json_response({"error": str(e)}, status=400)


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
