"""Camera paths: presets, the ReCapture camera file, and importers for the formats users already have.

A path gives, for each output frame, the new camera's pose in the coordinates of that frame's source
camera (camera-to-source, OpenCV axes: +x right, +y down, +z forward). See ``recapture.types.CameraPath``.

Preset directions, all starting at the source view (frame 0 = identity) and reaching the full amount
at the last frame:

- ``orbit_left`` / ``orbit_right``: the camera travels left (-x) / right (+x) on a circle around the
  pivot ``(0, 0, pivot_distance)`` about the vertical axis, always looking at the pivot.
- ``orbit_up`` / ``orbit_down``: the same about the horizontal axis; the camera rises (-y) / sinks.
- ``pan_left`` / ``pan_right``, ``tilt_up`` / ``tilt_down``: the camera turns in place.
- ``roll_right`` turns the camera clockwise about its optical axis as seen from behind it (the image
  content turns counter-clockwise); ``roll_left`` the other way.
- ``truck_*``, ``pedestal_*``, ``dolly_*``: the camera moves sideways, vertically, along its optical
  axis by ``amount`` percent of ``pivot_distance``.
- ``zoom_in`` / ``zoom_out``: the focal length grows / shrinks by ``amount`` percent (``zoom_in`` 50 =
  x1.5, ``zoom_out`` 50 = /1.5); nothing moves.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from .config import (EASINGS, MAX_PATH_BYTES, MAX_PATH_CAMERAS, PATH_CANCEL_EVERY, PRESETS, CameraConfig,
                     PointCloudConfig, setting_of)
from .files import atomic_path
from .geometry import focal_from_fov, fov_from_focal
from .types import CameraPath, PointCloud

# preset -> (kind, axis or direction, sign). Rotation axes are in the source camera's frame.
_X, _Y, _Z = (1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)
_PRESET_MOTION = {
    "orbit_left": ("orbit", _Y, 1.0), "orbit_right": ("orbit", _Y, -1.0),
    "orbit_up": ("orbit", _X, -1.0), "orbit_down": ("orbit", _X, 1.0),
    "pan_left": ("rotate", _Y, -1.0), "pan_right": ("rotate", _Y, 1.0),
    "tilt_up": ("rotate", _X, 1.0), "tilt_down": ("rotate", _X, -1.0),
    "roll_left": ("rotate", _Z, -1.0), "roll_right": ("rotate", _Z, 1.0),
    "truck_left": ("move", _X, -1.0), "truck_right": ("move", _X, 1.0),
    "pedestal_up": ("move", _Y, -1.0), "pedestal_down": ("move", _Y, 1.0),
    "dolly_in": ("move", _Z, 1.0), "dolly_out": ("move", _Z, -1.0),
    "zoom_in": ("zoom", None, 1.0), "zoom_out": ("zoom", None, -1.0),
}


class CameraPathError(ValueError):
    """A camera path or file that cannot be used; the message says where and how to fix it."""


def ease(t: torch.Tensor, easing: str) -> torch.Tensor:
    """Maps progress ``t`` in 0..1 to eased progress in 0..1.

    ``ease_in`` is quadratic (slow start), ``ease_out`` its mirror, ``ease_in_out`` a half cosine.
    """
    if easing == "linear":
        return t
    if easing == "ease_in":
        return t * t
    if easing == "ease_out":
        return 1.0 - (1.0 - t) ** 2
    if easing == "ease_in_out":
        return 0.5 - 0.5 * torch.cos(math.pi * t)
    raise CameraPathError(f"unknown easing {easing!r}: use one of {', '.join(EASINGS)}")


def rotation_about(axis: tuple[float, float, float], angles_rad: torch.Tensor) -> torch.Tensor:
    """``(N,)`` angles about a fixed unit axis -> ``(N, 3, 3)`` rotation matrices (right-handed)."""
    from kornia.geometry.conversions import axis_angle_to_rotation_matrix

    axis_angle = torch.tensor(axis, dtype=torch.float32)[None] * angles_rad[:, None].float()
    return axis_angle_to_rotation_matrix(axis_angle)


def _rigid(rotation: torch.Tensor, translation: torch.Tensor) -> torch.Tensor:
    n = rotation.shape[0]
    pose = torch.eye(4).repeat(n, 1, 1)
    pose[:, :3, :3] = rotation
    pose[:, :3, 3] = translation
    return pose


def preset_path(preset: str, num_frames: int, amount: float, *, pivot_distance: float = 1.0,
                easing: str = CameraConfig.easing, source_fov_deg: float = PointCloudConfig.fov_deg) -> CameraPath:
    """A preset camera move over ``num_frames`` frames (see the module docstring for directions).

    Args:
        preset: one of ``PRESETS``.
        num_frames: frames in the path; a single frame gets the full move (a one-image camera move).
        amount: degrees for orbit/pan/tilt/roll; percent of ``pivot_distance`` for
            truck/pedestal/dolly; percent of focal-length change for zoom (50 = x1.5 / divided by 1.5).
            Negative values reverse the direction.
        pivot_distance: distance from the source camera to the subject (scene units).
        easing: one of ``EASINGS``.
        source_fov_deg: the source camera's horizontal field of view (for zoom).
    """
    if preset not in PRESETS:
        raise CameraPathError(f"unknown camera preset {preset!r}: use one of {', '.join(PRESETS)}")
    if num_frames < 1:
        raise CameraPathError(f"the path needs at least 1 frame, got {num_frames}")
    if not math.isfinite(amount):
        raise CameraPathError(f"amount must be a finite number, got {amount}")
    if not (pivot_distance > 0 and math.isfinite(pivot_distance)):
        raise CameraPathError(f"pivot_distance must be > 0 (the subject's distance), got {pivot_distance}")
    t = torch.linspace(0.0, 1.0, num_frames) if num_frames > 1 else torch.ones(1)
    progress = ease(t, easing)
    fov = torch.full((num_frames,), float("nan"))
    identity = torch.eye(3).repeat(num_frames, 1, 1)
    if preset == "static":
        return CameraPath(poses=_rigid(identity, torch.zeros(num_frames, 3)), fov_deg=fov)
    kind, axis, sign = _PRESET_MOTION[preset]
    if kind == "zoom":
        if amount <= -100:
            raise CameraPathError(f"zoom amount is a percent change of focal length and must be > -100, got {amount}")
        scale = 1.0 + amount / 100.0 * progress
        scale = scale if sign > 0 else 1.0 / scale
        fov = fov_from_focal(focal_from_fov(source_fov_deg, 1.0) * scale, 1.0)
        return CameraPath(poses=_rigid(identity, torch.zeros(num_frames, 3)), fov_deg=fov.float())
    if kind == "move":
        direction = torch.tensor(axis) * sign
        translation = direction[None] * (amount / 100.0 * pivot_distance * progress)[:, None]
        return CameraPath(poses=_rigid(identity, translation), fov_deg=fov)
    rotation = rotation_about(axis, torch.deg2rad(sign * amount * progress))
    if kind == "rotate":
        return CameraPath(poses=_rigid(rotation, torch.zeros(num_frames, 3)), fov_deg=fov)
    # orbit: rotate the camera about the pivot, T = translate(p) @ R @ translate(-p)
    pivot = torch.tensor([0.0, 0.0, pivot_distance])
    translation = pivot[None] - rotation @ pivot
    return CameraPath(poses=_rigid(rotation, translation), fov_deg=fov)


def pivot_distance_from_depth(depth: torch.Tensor, fraction: float = 0.1) -> float:
    """The subject's distance: median valid depth in a central window of ``fraction`` of each side.

    Args:
        depth: ``(H, W)`` z-depth, ``0`` = invalid.
    """
    h, w = depth.shape
    dh, dw = max(1, int(h * fraction / 2)), max(1, int(w * fraction / 2))
    centre = depth[h // 2 - dh : h // 2 + dh + 1, w // 2 - dw : w // 2 + dw + 1]
    for region in (centre, depth):
        valid = region[(region > 0) & torch.isfinite(region)]
        if valid.numel():
            return float(valid.median())
    raise CameraPathError("the depth has no valid value to find the subject's distance: check the depth input")


# --- The ReCapture camera file -------------------------------------------------------------------
def path_to_json(path: CameraPath) -> dict:
    """The path in the camera file format (``fov_deg`` left out where the source intrinsics are kept)."""
    frames = []
    for pose, fov in zip(path.poses.tolist(), path.fov_deg.tolist()):
        entry = {"pose": [[float(v) for v in row] for row in pose]}
        if not math.isnan(fov):
            entry["fov_deg"] = float(fov)
        frames.append(entry)
    return {"version": 1, "convention": "opencv", "frames": frames}


def save_path_json(path: CameraPath, file: str | os.PathLike) -> Path:
    with atomic_path(file) as tmp:
        tmp.write_text(json.dumps(path_to_json(path), indent=1))
    return Path(file)


def check_poses(matrices: torch.Tensor, where: Callable[[int], str], field: str = "'pose'") -> torch.Tensor:
    """The one check of camera poses, for the ReCapture camera file and every importer: each ``(N, 4, 4)``
    matrix finite, its last row ``[0, 0, 0, 1]``, its rotation rigid and right-handed (R^T R = I, det +1).

    Args:
        where: frame index -> where it is in its file ("frame 3", "line 5 (frame 3)"), for the message.
        field: what the matrix is called there ("'pose'", "'transform_matrix'").

    Returns:
        the matrices as float32.
    """
    m = matrices.double()
    finite = torch.isfinite(m).flatten(1).all(1)
    if not finite.all():
        raise CameraPathError(f"{where(_first(~finite))}: {field} has a NaN or infinite value")
    last_row = torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=torch.float64)
    bad_row = ((m[:, 3] - last_row).abs() > 1e-6 + 1e-5 * last_row).any(1)
    if bad_row.any():
        raise CameraPathError(f"{where(_first(bad_row))}: the last row of {field} must be [0, 0, 0, 1]")
    r = m[:, :3, :3]
    orthogonality = (r.transpose(1, 2) @ r - torch.eye(3, dtype=torch.float64)).abs().amax((1, 2))
    det = torch.linalg.det(r)
    not_rigid = (orthogonality > 1e-3) | ((det - 1.0).abs() > 1e-3)
    if not_rigid.any():
        i = _first(not_rigid)
        raise CameraPathError(
            f"{where(i)}: the rotation part of {field} is not a rigid rotation (R^T R differs from I by "
            f"{orthogonality[i].item():.3g}, det {det[i].item():.4g}): scale, shear or a mirrored axis are not "
            "allowed")
    return m.float()


def _first(mask: torch.Tensor) -> int:
    return int(mask.nonzero()[0, 0])


def _matrix_rows(matrix, where: str, field: str = "'pose'") -> list:
    """A JSON 4x4 matrix checked for its shape and numbers (``check_poses`` checks the values)."""
    if not (isinstance(matrix, list) and len(matrix) == 4 and all(isinstance(r, list) and len(r) == 4 for r in matrix)):
        raise CameraPathError(f"{where}: {field} must be a 4x4 list of numbers (rows of 4)")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for row in matrix for v in row):
        raise CameraPathError(f"{where}: {field} must hold only numbers")
    return matrix


_FOV = setting_of(PointCloudConfig, "fov_deg")


def _fov_in_range(fov: float) -> bool:
    return math.isfinite(fov) and _FOV.min <= fov <= _FOV.max


def _check_fov(fov, where: str) -> float:
    if fov is None:
        return float("nan")
    if isinstance(fov, bool) or not isinstance(fov, (int, float)) or not _fov_in_range(fov):
        raise CameraPathError(f"{where}: 'fov_deg' must be a number of degrees between {_FOV.min:g} and "
                              f"{_FOV.max:g}, got {fov!r}")
    return float(fov)


def _check_count(count: int, more: bool = False) -> None:
    """Refuses a path of more than ``MAX_PATH_CAMERAS`` cameras (``more``: counting stopped there)."""
    if count > MAX_PATH_CAMERAS:
        cameras = f"more than {MAX_PATH_CAMERAS}" if more else str(count)
        raise CameraPathError(
            f"{cameras} cameras: a camera path holds at most {MAX_PATH_CAMERAS} (the largest frame count; it is "
            f"resampled to the frame count anyway): keep one camera in {max(2, math.ceil(count / MAX_PATH_CAMERAS))}")


def _check_size(size: int, source: str) -> None:
    """Refuses a camera file or text of over ``MAX_PATH_BYTES`` before it is parsed."""
    if size > MAX_PATH_BYTES:
        raise CameraPathError(
            f"{source} is {size / 2**20:.1f} MB: a camera path is at most {MAX_PATH_BYTES / 2**20:g} MB "
            f"({MAX_PATH_CAMERAS} cameras): use fewer cameras")


def _cancel_point(check_cancel: Callable[[], None] | None, index: int) -> None:
    """Calls ``check_cancel`` every ``PATH_CANCEL_EVERY`` cameras of a long path."""
    if check_cancel is not None and index % PATH_CANCEL_EVERY == 0:
        check_cancel()


def _parse_json(text: str, source: str, fix: str = "") -> object:
    """``json.loads`` whose errors (bad JSON, nesting too deep for the parser, a number too long) name
    ``source`` and end with ``fix``."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        problem = f"is not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}"
    except RecursionError:
        problem = "is nested too deeply (lists or objects inside each other) to be a camera path"
    except ValueError as e:  # e.g. an integer over Python's digit limit
        problem = f"is not valid JSON: {e}"
    raise CameraPathError(f"{source} {problem}{fix}")


def path_from_json(data: dict, *, check_cancel: Callable[[], None] | None = None) -> CameraPath:
    """Validates a parsed camera file and returns its path.

    Args:
        check_cancel: called every ``PATH_CANCEL_EVERY`` cameras; it raises to stop (the nodes pass
            ComfyUI's Cancel check).
    """
    if not isinstance(data, dict):
        raise CameraPathError("the camera file must be a JSON object with 'version', 'convention' and 'frames'")
    if data.get("version") != 1:
        raise CameraPathError(f"unsupported camera file version {data.get('version')!r}: this pack reads version 1")
    if data.get("convention") != "opencv":
        raise CameraPathError(
            f"'convention' must be \"opencv\" (+x right, +y down, +z forward), got {data.get('convention')!r}")
    frames = data.get("frames")
    if not isinstance(frames, list) or not frames:
        raise CameraPathError("'frames' must be a non-empty list with one entry per output frame")
    _check_count(len(frames))
    poses, fovs = [], []
    for i, frame in enumerate(frames):
        _cancel_point(check_cancel, i)
        where = f"frame {i}"
        if not isinstance(frame, dict) or "pose" not in frame:
            raise CameraPathError(f"{where}: each frame must be an object with a 'pose'")
        poses.append(_matrix_rows(frame["pose"], where))
        fovs.append(_check_fov(frame.get("fov_deg"), where))
    poses = check_poses(torch.tensor(poses, dtype=torch.float64), lambda i: f"frame {i}")
    return CameraPath(poses=poses, fov_deg=torch.tensor(fovs, dtype=torch.float32))


def _read_text(file: str | os.PathLike) -> str:
    """A camera file's text: at most ``MAX_PATH_BYTES``, UTF-8 (a byte-order mark is allowed)."""
    file = Path(file)
    _check_size(file.stat().st_size, file.name)
    data = file.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise CameraPathError(
            f"{file.name} is not UTF-8 text (byte 0x{data[e.start]:02x} at position {e.start}): save it as UTF-8 "
            "(camera files are plain text)") from None


def _read_json(file: str | os.PathLike):
    return _parse_json(_read_text(file), str(file))


def _named(source: str, parse: Callable[[], CameraPath]) -> CameraPath:
    """``parse()``, its messages led by the file or input they are about."""
    try:
        return parse()
    except CameraPathError as e:
        raise CameraPathError(f"{source}: {e}") from None


def load_path_json(file: str | os.PathLike, *, check_cancel: Callable[[], None] | None = None) -> CameraPath:
    data = _read_json(file)
    return _named(Path(file).name, lambda: path_from_json(data, check_cancel=check_cancel))


def path_from_json_text(text: str, source: str, *, check_cancel: Callable[[], None] | None = None) -> CameraPath:
    """A camera file given as a string (a widget's value, a request body) -> its path.

    ``source`` names where the text came from, so the message points the user at it. Text over
    ``MAX_PATH_BYTES`` is refused before it is parsed.
    """
    _check_size(len(text), source)
    data = _parse_json(text, source, (
        ": paste a ReCapture camera file ({\"version\": 1, \"convention\": \"opencv\", \"frames\": [...]}, as the "
        f"path_json output writes it) or clear {source} to use the preset"))
    return _named(source, lambda: path_from_json(data, check_cancel=check_cancel))


def _setting(value, config: type, name: str, label: str | None = None):
    """A widget or request value held to its setting's type and range (``recapture.config``)."""
    s = setting_of(config, name)
    return _number(value, label or name, type(s.default), s.min, s.max)


def _number(value, name: str, kind: type, low: float, high: float):
    """A widget or request value checked to be a ``kind`` number in ``low..high`` (JSON gives any type)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise CameraPathError(f"'{name}' must be a number, got {value!r}")
    if kind is int and math.isfinite(value) and value != int(value):
        raise CameraPathError(f"'{name}' must be a whole number, got {value!r}")
    if not (math.isfinite(value) and low <= value <= high):
        raise CameraPathError(f"'{name}' must be between {low:g} and {high:g}, got {value!r}")
    return kind(value)


# --- Which path a Camera Trajectory node renders ---------------------------------------------------
NO_CLOUD_PIVOT = ("pivot_distance is 0 (automatic) but no point cloud gives the subject's distance: connect the "
                  "point cloud or set pivot_distance")
STAND_IN_NOTE = "a stand-in until the node runs with a point cloud"


@dataclass(frozen=True)
class PathChoice:
    """The camera path a Camera Trajectory node renders, and why (see ``choose_camera_path``).

    Attributes:
        path: one new camera per output frame.
        source: the input that won: ``"custom"`` (the custom_path text), ``"file"`` (the camera file) or
            ``"preset"``.
        pivot_distance: the subject's distance in scene units (the orbit pivot, the editor's scale);
            None when unknown (automatic, no point cloud, and a file or custom path that does not need it).
        source_fov_deg: the source camera's horizontal field of view in degrees.
        description: one line for the editor's caption, e.g. ``"camera file orbit.json replaces the
            preset: 30 cameras, resampled to 14 frames"``.
    """

    path: CameraPath
    source: str
    pivot_distance: float | None
    source_fov_deg: float
    description: str


def _cameras(loaded: CameraPath, frames: int) -> str:
    n = loaded.num_frames
    cameras = f"{n} camera{'s' if n != 1 else ''}"
    return cameras if n == frames else f"{cameras}, resampled to {frames} frames"


def _automatic_pivot(cloud: PointCloud, needed: bool) -> float:
    """The subject's distance from the cloud's first frame; 0 when the depth has none and the path
    does not need it (a file or custom path only shows the pivot in the editor)."""
    try:
        return pivot_distance_from_depth(cloud.depth[0])
    except CameraPathError:
        if needed:
            raise
        return 0.0


def choose_camera_path(preset: str, amount: float, easing: str, frames: int, pivot_distance: float,
                       camera_file: str | os.PathLike | None = None, custom_path: str | None = "", *,
                       cloud: PointCloud | None = None, source_fov_deg: float | None = None,
                       stand_in_pivot: float | None = None, stand_in_note: str = STAND_IN_NOTE,
                       check_cancel: Callable[[], None] | None = None) -> PathChoice:
    """The camera path of a Camera Trajectory node's settings: the one place that decides which input
    wins, for the node, the command line and the 3D editor (which therefore draws what the node renders).

    Precedence: a non-blank ``custom_path``, else ``camera_file``, else the preset. A file or custom path
    is resampled to the frame count (``resample_path``); the preset is made at it.

    Args:
        preset, amount, easing: the preset move (see ``preset_path``); checked only when the preset wins,
            so a file or custom path works with any of them (the command line then has no preset).
        frames: the frame count (``CameraConfig.frames``' range); a ``cloud`` sets it instead.
        pivot_distance: the subject's distance in scene units (``CameraConfig``'s range); 0 = automatic:
            ``pivot_distance_from_depth`` of the cloud's first frame.
        camera_file: a camera file ``load_path_file`` reads, or None.
        custom_path: a ReCapture camera file as text (the node's custom_path widget); blank or None = none.
        cloud: the scene: gives the frame count, the automatic pivot and the source field of view.
        source_fov_deg: the source camera's horizontal field of view in degrees (``PointCloudConfig``), used by
            zoom presets; None = the cloud's (``cloud.fov_deg()``), else 60.
        stand_in_pivot: the pivot to use when it is automatic and no cloud is given (the editor draws before
            the depth is known); None = refuse, as the node does: an orbit needs the subject's distance.
        stand_in_note: what the description says of the stand-in, e.g. "from the last run's depth".
        check_cancel: called now and then while a long file or custom path is read; it raises to stop (the
            node passes ComfyUI's Cancel check). Paths over ``MAX_PATH_CAMERAS`` cameras are refused.

    Raises:
        CameraPathError: a value out of range, an unknown preset or easing, a bad file or custom path,
            or an automatic pivot with neither a cloud nor a stand-in.
    """
    frames = _setting(frames, CameraConfig, "frames")
    pivot = _setting(pivot_distance, CameraConfig, "pivot_distance")
    if source_fov_deg is not None:
        fov = _setting(source_fov_deg, PointCloudConfig, "fov_deg")
    else:
        fov = cloud.fov_deg() if cloud is not None else PointCloudConfig.fov_deg
    custom_path = "" if custom_path is None else custom_path
    if not isinstance(custom_path, str):
        raise CameraPathError(f"'custom_path' must be text (a ReCapture camera file as JSON), got {custom_path!r}")
    use_custom, use_preset = bool(custom_path.strip()), not custom_path.strip() and camera_file is None
    pivot_note = ""
    if cloud is not None:
        frames = cloud.num_frames
        if pivot == 0:
            pivot, pivot_note = _automatic_pivot(cloud, needed=use_preset), "from the depth"

    if use_custom:
        loaded = path_from_json_text(custom_path, "custom_path", check_cancel=check_cancel)
        return PathChoice(resample_path(loaded, frames), "custom", pivot or None, fov,
                          f"custom path active (Clear to use the preset): {_cameras(loaded, frames)}")
    if camera_file is not None:
        loaded = load_path_file(camera_file, check_cancel=check_cancel)
        return PathChoice(resample_path(loaded, frames), "file", pivot or None, fov,
                          f"camera file {Path(camera_file).name} replaces the preset: {_cameras(loaded, frames)}")

    amount = _setting(amount, CameraConfig, "amount")  # preset and easing: checked by preset_path
    if pivot == 0:
        if stand_in_pivot is None:
            raise CameraPathError(NO_CLOUD_PIVOT)
        pivot = _setting(stand_in_pivot, CameraConfig, "pivot_distance", "stand_in_pivot")
        pivot_note = stand_in_note
    path = preset_path(preset, frames, amount, pivot_distance=pivot, easing=easing, source_fov_deg=fov)
    pivot_note = f" (pivot {pivot:.3g}, {pivot_note})" if pivot_note else ""
    return PathChoice(path, "preset", pivot, fov, f"{preset} {amount:g}, {frames} frames{pivot_note}")


# --- Importers --------------------------------------------------------------------------------------
def _relative_to_first(camera_to_world: torch.Tensor) -> torch.Tensor:
    """``(N, 4, 4)`` camera-to-world (OpenCV axes) -> poses relative to the first camera."""
    c2w = camera_to_world.double()
    return (torch.linalg.inv(c2w[0])[None] @ c2w).float()


def _scaled(poses: torch.Tensor, scale: float) -> torch.Tensor:
    poses = poses.clone()
    poses[:, :3, 3] *= scale
    return poses


def path_from_realestate10k(text: str, *, scale: float = 1.0, use_intrinsics: bool = True,
                            check_cancel: Callable[[], None] | None = None) -> CameraPath:
    """RealEstate10K / CameraCtrl camera text -> a path relative to its first frame.

    Each data line is ``timestamp fx fy cx cy k1 k2`` followed by the 3x4 world-to-camera matrix row by
    row (OpenCV axes); intrinsics are normalised by the image size. Lines that are not 19 numbers (the
    URL on the first line) are skipped. Every matrix is checked as a ReCapture pose is (``check_poses``)
    and every ``fx`` must give a field of view in ``PointCloudConfig.fov_deg``'s range.

    Args:
        scale: multiplies translations (RealEstate10K's units are arbitrary: match them to the depth's).
        use_intrinsics: take each frame's horizontal field of view from its ``fx``.
        check_cancel: called every ``PATH_CANCEL_EVERY`` lines; it raises to stop.
    """
    rows, line_numbers = [], []
    for number, line in enumerate(text.splitlines(), start=1):
        _cancel_point(check_cancel, number)
        parts = line.split()
        try:
            values = [float(v) for v in parts]
        except ValueError:
            continue
        if len(values) != 19:
            if values:
                raise CameraPathError(f"line {number}: expected 19 numbers (timestamp fx fy cx cy k1 k2 and a "
                                      f"3x4 matrix), found {len(values)}")
            continue
        rows.append(values)
        line_numbers.append(number)
        _check_count(len(rows), more=True)
    if not rows:
        raise CameraPathError("no camera lines found: expected RealEstate10K lines of 19 numbers")

    def where(i: int) -> str:
        return f"line {line_numbers[i]} (frame {i})"

    data = torch.tensor(rows, dtype=torch.float64)
    w2c = torch.eye(4, dtype=torch.float64).repeat(len(rows), 1, 1)
    w2c[:, :3, :] = data[:, 7:].reshape(-1, 3, 4)
    check_poses(w2c, where, "the 3x4 world-to-camera matrix")
    fov = torch.full((len(rows),), float("nan"))
    if use_intrinsics:
        for i, fx in enumerate(data[:, 1].tolist()):
            degrees = fov_from_focal(fx, 1.0) if math.isfinite(fx) and fx > 0 else math.nan
            if not _fov_in_range(degrees):
                shown = f" ({degrees:.4g} degrees)" if math.isfinite(degrees) else ""
                raise CameraPathError(
                    f"{where(i)}: 'fx' (the second number: focal length / image width) must give a field of view "
                    f"between {_FOV.min:g} and {_FOV.max:g} degrees, got {fx!r}{shown}: check the columns "
                    "(timestamp fx fy cx cy k1 k2, then the matrix)")
            fov[i] = degrees
    poses = _scaled(_relative_to_first(torch.linalg.inv(w2c)), scale)
    return CameraPath(poses=poses, fov_deg=fov)


_OPENGL_TO_OPENCV = torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0], dtype=torch.float64))


def path_from_nerf(data: dict, *, scale: float = 1.0, check_cancel: Callable[[], None] | None = None) -> CameraPath:
    """NeRF / instant-ngp / nerfstudio ``transforms.json`` -> a path relative to its first frame.

    ``frames[i].transform_matrix`` is camera-to-world with OpenGL axes (+y up, +z backward); frames are
    taken in file order. The field of view comes from ``camera_angle_x`` (radians) or ``fl_x`` and ``w``,
    per frame if given there, else from the top level. Every matrix is checked as a ReCapture pose is
    (``check_poses``), every field of view against ``PointCloudConfig.fov_deg``'s range.

    Args:
        check_cancel: called every ``PATH_CANCEL_EVERY`` frames; it raises to stop.
    """
    frames = data.get("frames")
    if not isinstance(frames, list) or not frames:
        raise CameraPathError("no 'frames' list: a NeRF transforms.json lists its cameras in 'frames'")
    _check_count(len(frames))
    matrices, fovs = [], []
    for i, frame in enumerate(frames):
        _cancel_point(check_cancel, i)
        matrix = frame.get("transform_matrix") if isinstance(frame, dict) else None
        if isinstance(matrix, list) and len(matrix) == 3:
            matrix = matrix + [[0, 0, 0, 1]]
        matrices.append(_matrix_rows(matrix, f"frame {i}", "'transform_matrix'"))
        fovs.append(_nerf_fov(frame, data, i))
    poses = check_poses(torch.tensor(matrices, dtype=torch.float64), lambda i: f"frame {i}", "'transform_matrix'")
    c2w = poses.double() @ _OPENGL_TO_OPENCV
    return CameraPath(poses=_scaled(_relative_to_first(c2w), scale), fov_deg=torch.tensor(fovs, dtype=torch.float32))


def _positive(source: dict, key: str, where: str, what: str) -> float:
    value = source[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
        raise CameraPathError(f"{where}: {key!r} must be a number > 0 ({what}), got {value!r}")
    return float(value)


def _nerf_fov(frame: dict, top: dict, index: int) -> float:
    """A NeRF frame's field of view in degrees, from the frame or else the top level; NaN if neither has one."""
    for source, where in ((frame, f"frame {index}"), (top, "top level")):
        if "camera_angle_x" in source:
            angle = source["camera_angle_x"]
            number = isinstance(angle, (int, float)) and not isinstance(angle, bool)
            degrees = math.degrees(angle) if number and math.isfinite(angle) else math.nan
            if not _fov_in_range(degrees):
                raise CameraPathError(
                    f"{where}: 'camera_angle_x' must be a number of radians giving a field of view between "
                    f"{_FOV.min:g} and {_FOV.max:g} degrees ({math.radians(_FOV.min):.4g} to "
                    f"{math.radians(_FOV.max):.4g} radians), got {angle!r}")
            return degrees
        if "fl_x" in source and "w" in source:
            focal = _positive(source, "fl_x", where, "the focal length in pixels")
            width = _positive(source, "w", where, "the image width in pixels")
            degrees = fov_from_focal(focal, width)
            if not _fov_in_range(degrees):
                raise CameraPathError(
                    f"{where}: 'fl_x' {focal:g} with 'w' {width:g} gives a field of view of {degrees:.4g} degrees: "
                    f"it must be between {_FOV.min:g} and {_FOV.max:g}")
            return degrees
    return float("nan")


def load_path_file(file: str | os.PathLike, *, scale: float = 1.0,
                   check_cancel: Callable[[], None] | None = None) -> CameraPath:
    """Any supported camera file, recognised by its content: ReCapture JSON, NeRF transforms.json or
    RealEstate10K / CameraCtrl text. ``scale`` multiplies imported translations (not ReCapture JSON's).

    Files over ``MAX_PATH_BYTES`` or ``MAX_PATH_CAMERAS`` cameras, not UTF-8, or with a bad pose or field
    of view are refused with the file, frame (and line) and field named; ``check_cancel`` is called every
    ``PATH_CANCEL_EVERY`` cameras and raises to stop.
    """
    file = Path(file)
    if not file.is_file():
        raise CameraPathError(f"camera file {file} does not exist")
    text = _read_text(file)
    if text.lstrip().startswith("{"):
        data = _parse_json(text, str(file))
        if isinstance(data, dict) and ("convention" in data or "version" in data):
            return _named(file.name, lambda: path_from_json(data, check_cancel=check_cancel))
        if isinstance(data, dict) and isinstance(data.get("frames"), list):
            return _named(file.name, lambda: path_from_nerf(data, scale=scale, check_cancel=check_cancel))
        raise CameraPathError(f"{file.name}: a JSON file that is neither a ReCapture camera file "
                              "('version', 'convention', 'frames') nor a NeRF transforms.json")
    return _named(file.name, lambda: path_from_realestate10k(text, scale=scale, check_cancel=check_cancel))


def is_camera_file(file: str | os.PathLike) -> bool:
    """Whether ``load_path_file`` takes the file for a camera file (its content is checked when it is
    loaded): text, or JSON that is a ReCapture camera file or a NeRF transforms.json; not a JSON object of
    another kind, such as the bundled sample's ``recapture_sample.json`` (its near, far and fov). Lists
    of camera files offer only these."""
    try:
        if Path(file).stat().st_size > MAX_PATH_BYTES:
            return True  # loading it says it is too big
        text = Path(file).read_text(encoding="utf-8-sig", errors="replace")
    except OSError:
        return False
    if not text.lstrip().startswith("{"):
        return True
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: nested too deeply for the parser
        return True  # a broken camera file: loading it says where
    return isinstance(data, dict) and ("convention" in data or "version" in data or isinstance(data.get("frames"), list))


def _slerp(q0: torch.Tensor, q1: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation of unit quaternions ``(N, 4)`` with weights ``(N,)``."""
    dot = (q0 * q1).sum(-1, keepdim=True)
    q1 = torch.where(dot < 0, -q1, q1)  # the short way round
    dot = dot.abs().clamp(max=1.0)
    theta = torch.acos(dot)
    sin = torch.sin(theta)
    t = t[:, None]
    linear = sin < 1e-6
    w0 = torch.where(linear, 1 - t, torch.sin((1 - t) * theta) / sin.clamp_min(1e-12))
    w1 = torch.where(linear, t, torch.sin(t * theta) / sin.clamp_min(1e-12))
    q = w0 * q0 + w1 * q1
    return q / q.norm(dim=-1, keepdim=True)


def resample_path(path: CameraPath, num_frames: int) -> CameraPath:
    """Resamples a path to ``num_frames`` evenly over its length (first and last frames kept).

    Translations and fields of view interpolate linearly, rotations by quaternion slerp.
    """
    from kornia.geometry.conversions import quaternion_to_rotation_matrix, rotation_matrix_to_quaternion

    if num_frames < 1:
        raise CameraPathError(f"the path needs at least 1 frame, got {num_frames}")
    n = path.num_frames
    if n == num_frames:
        return path
    position = torch.linspace(0, n - 1, num_frames) if num_frames > 1 else torch.zeros(1)
    lo = position.floor().long().clamp(max=n - 1)
    hi = (lo + 1).clamp(max=n - 1)
    t = position - lo.float()
    quats = rotation_matrix_to_quaternion(path.poses[:, :3, :3].contiguous())
    rotation = quaternion_to_rotation_matrix(_slerp(quats[lo], quats[hi], t))
    translation = torch.lerp(path.poses[lo, :3, 3], path.poses[hi, :3, 3], t[:, None])
    fov = torch.lerp(path.fov_deg[lo], path.fov_deg[hi], t)
    return CameraPath(poses=_rigid(rotation, translation), fov_deg=fov)
