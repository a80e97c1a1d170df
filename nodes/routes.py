"""HTTP routes of the pack, for its frontend: thin wrappers around the ``recapture`` library."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
from pathlib import Path

from aiohttp import web

from ..recapture import camera
from ..recapture.config import MAX_PATH_CAMERAS, MAX_PATH_REQUEST_BYTES, CameraConfig
from ._api import input_path
from .anchor import NO_FILE

_registered = False
FIELDS = ("{preset, amount, easing, frames, pivot_distance, camera_file, custom_path, fov_deg, stand_in_pivot, "
          "point_cloud}")
# Why an automatic pivot is drawn with a stand-in before a run. The subject's distance is the depth of the
# point cloud's first frame, which exists only once the graph runs (depth models, the clip's normalisation):
# the editor cannot know it earlier, so the caption says so, and whether the node can run at all.
STAND_IN_LINKED = "a stand-in: the connected point cloud's depth sets it when the graph runs"
STAND_IN_UNLINKED = ("a stand-in: with pivot_distance 0 the node needs a point cloud to run - connect one or "
                     "set pivot_distance")


def _choice(params: dict) -> camera.PathChoice:
    """The editor's widget values -> the path the node will render (``camera.choose_camera_path``).

    ``camera_file`` is a name in ComfyUI's input folder (or the node's "none" entry); ``stand_in_pivot``
    is the pivot of the node's last run, drawn while ``pivot_distance`` is 0 (automatic), or null before
    a run (1 is drawn); ``point_cloud`` (optional) says whether a point cloud is connected, for the
    caption of that stand-in. Raises ``ValueError`` with the message for the user."""
    name = params.get("camera_file") or NO_FILE
    if not isinstance(name, str):
        raise ValueError(f"'camera_file' must be a file name from ComfyUI's input folder, got {name!r}")
    last_pivot, linked = params.get("stand_in_pivot"), params.get("point_cloud")
    if last_pivot is not None:
        note = "from the last run's depth"
    else:
        note = STAND_IN_LINKED if linked is True else STAND_IN_UNLINKED if linked is False else camera.STAND_IN_NOTE
    return camera.choose_camera_path(
        params.get("preset"), params.get("amount"), params.get("easing", CameraConfig.easing), params.get("frames"),
        params.get("pivot_distance"), camera_file=None if name == NO_FILE else input_path(name),
        custom_path=params.get("custom_path", ""), source_fov_deg=params.get("fov_deg"),
        stand_in_pivot=1.0 if last_pivot is None else last_pivot,
        stand_in_note=note)


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


async def frames_preview(request: web.Request) -> web.Response:
    """``GET /recapture/frames?folder=<frames_folder value>`` -> the frames Load Video's preview plays for
    a frames folder (``video.folder_preview``); a bad name -> HTTP 400 ``{"error": message}``."""
    from .video import folder_preview

    def answer() -> tuple[str, int]:
        try:
            return json.dumps(folder_preview(request.query.get("folder", ""))), 200
        except (ValueError, OSError) as e:
            return json.dumps({"error": str(e)}), 400

    text, status = await asyncio.get_running_loop().run_in_executor(None, answer)
    return web.Response(text=text, status=status, content_type="application/json")


DOCS = Path(__file__).resolve().parent.parent / "web" / "docs"


async def localized_help(request: web.Request) -> web.Response:
    """The frontend asks for ``docs/<Node>/<locale>.md`` before ``docs/<Node>.md``: answer it with the one
    help page (English) instead of a 404 in the console or a copy of every page per locale."""
    node = request.match_info["node"]
    page = DOCS / f"{node}.md"
    if not re.fullmatch(r"ReCapture[A-Za-z0-9]{1,64}", node) or not page.is_file():
        raise web.HTTPNotFound()
    return web.Response(text=page.read_text(encoding="utf-8"), content_type="text/markdown")


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
    instance.routes.get("/recapture/frames")(frames_preview)  # Load Video's frames-folder preview
    from .last_outputs import last_outputs  # the previews' last run, after a reload (web/last_run.js)

    instance.routes.post("/recapture/last_outputs")(last_outputs)
    # before ComfyUI's static route for the pack's web/ folder, which it adds after these
    pack = os.path.basename(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # its folder's name
    instance.routes.get(f"/extensions/{pack}/docs/{{node}}/{{locale}}.md")(localized_help)
    _registered = True
    logging.debug("[ComfyUI-ReCapture] registered /recapture/camera_path")
