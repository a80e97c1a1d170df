"""Reading clips (video files or folders of numbered frames) and writing videos, with PyAV.

Frames are float32 ``(N, H, W, 3)`` in 0..1 on the CPU, like ComfyUI's IMAGE.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from .config import FIT_MODES, ClipConfig, check_setting, setting_of
from .files import atomic_path

FRAME_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v", ".gif")


class VideoError(ValueError):
    """A clip that cannot be read as asked; the message names the problem and the fix."""


ALL_FRAMES = 0  # a frame count meaning "every frame to the end of the clip"


@dataclass(frozen=True)
class ClipSelection:
    """Which source frames to take: ``start``, ``start + step``, ... (``count`` of them; ``ALL_FRAMES``:
    to the end of the clip, at most ClipConfig's largest frame count)."""

    start: int = ClipConfig.start_frame
    count: int = ClipConfig.frame_count
    step: int = ClipConfig.every_nth

    def __post_init__(self) -> None:
        # the ranges of ClipConfig (the nodes' and the command line's), not only >= 0 / >= 1
        for name, value in (("start_frame", self.start), ("frame_count", self.count), ("every_nth", self.step)):
            check_setting(ClipConfig, name, value, error=VideoError)

    @property
    def last(self) -> int | None:
        """Index of the last frame taken; None for ``ALL_FRAMES`` (not known before the clip's end)."""
        return None if self.count == ALL_FRAMES else self.start + (self.count - 1) * self.step

    def wanted(self, index: int) -> bool:
        return (index >= self.start and (self.last is None or index <= self.last)
                and (index - self.start) % self.step == 0)

    def within(self, name: str, available: int) -> ClipSelection:
        """This selection with a definite count for a clip ``name`` of ``available`` frames; raises
        ``VideoError`` when the clip is too short or "all" would take more than the largest frame count."""
        count = self.count if self.count != ALL_FRAMES else len(range(self.start, available, self.step))
        if count == 0 or self.start + (count - 1) * self.step >= available:
            raise VideoError(_too_short_message(name, available, self))
        if count > MAX_FRAMES:
            raise VideoError(f"{name} has {count} frames from frame {self.start} (every {self.step}): more than "
                             f"{MAX_FRAMES} at once; give a frame count, a later start or a larger every-n-th")
        return ClipSelection(self.start, count, self.step)


MAX_FRAMES = int(setting_of(ClipConfig, "frame_count").max)


def _natural_key(name: str) -> list:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def has_frames(folder: str | os.PathLike) -> bool:
    """Whether a folder holds at least one image frame (stops at the first)."""
    with os.scandir(folder) as entries:
        return any(e.is_file() and os.path.splitext(e.name)[1].lower() in FRAME_EXTENSIONS for e in entries)


def list_frame_files(folder: str | os.PathLike) -> list[Path]:
    """Image files of a frame folder in natural order (``frame_2.png`` before ``frame_10.png``)."""
    folder = Path(folder)
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in FRAME_EXTENSIONS]
    if not files:
        raise VideoError(
            f"the folder {folder} holds no image frames ({', '.join(FRAME_EXTENSIONS)}): "
            "put numbered frames such as 0001.png, 0002.png... in it"
        )
    return sorted(files, key=lambda p: _natural_key(p.name))


def max_frame_pixels(max_pixels: int | None = None) -> int:
    """The largest frame read, in pixels: ``max_pixels``, or ``ClipConfig.max_megapixels``."""
    return int(max_pixels if max_pixels is not None else ClipConfig.max_megapixels * 1_000_000)


def _too_large(what: str, declared: str, max_pixels: int) -> VideoError:
    return VideoError(
        f"{what} declares {declared} pixels per frame; the limit is {max_pixels / 1e6:g} megapixels "
        "(ClipConfig.max_megapixels): a frame that large is most likely a decompression bomb (a small file that "
        "would fill the memory) or a damaged file. If it is real, scale the frames down (e.g. to 3840x2160) "
        "before loading them")


def check_frame_size(what: str, width: int, height: int, max_pixels: int | None = None) -> None:
    """Raises ``VideoError`` when a frame of ``width`` x ``height`` (as a file declares it, before anything is
    decoded) is over ``max_frame_pixels``."""
    if width * height > max_frame_pixels(max_pixels):
        raise _too_large(what, f"{width}x{height}", max_frame_pixels(max_pixels))


def image_to_array(path: Path, max_pixels: int | None = None) -> np.ndarray:
    """One image file as float32 ``(H, W, 3)`` in 0..1; 16-bit images keep their precision.

    The size the file declares is checked (``check_frame_size``) before a pixel is decoded; PIL's own
    decompression-bomb refusal gets the same message."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            check_frame_size(str(path), *im.size, max_pixels)
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                data = np.asarray(im, dtype=np.float32)
                scale = 65535.0 if im.mode.startswith("I;16") or data.max() > 255 else 255.0
                gray = data / scale
                return np.repeat(gray[..., None], 3, axis=-1).clip(0.0, 1.0)
            return np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
    except Image.DecompressionBombError as e:  # over PIL's own limit: refused in Image.open, size unknown
        pixels = re.search(r"\((\d+) pixels\)", str(e))
        raise _too_large(str(path), pixels[1] if pixels else "too many", max_frame_pixels(max_pixels)) from e
    except OSError as e:
        raise VideoError(f"cannot read the image {path}: {e}") from e


def read_frame_folder(folder: str | os.PathLike, selection: ClipSelection, *, size: tuple[int, int] | None = None,
                      mode: str = "crop", check_file: Callable[[Path], str | os.PathLike] | None = None,
                      max_pixels: int | None = None) -> tuple[torch.Tensor, None]:
    """Reads the selected frames of a folder of numbered images: ``(N, H, W, 3)`` and no fps.

    Args:
        size, mode: ``(width, height)`` to bring each frame to as soon as it is read (``fit_frames``), so
            memory never holds more than one full-size frame; None keeps the files' size.
        check_file: called with each frame file before it is read; returns the path to read (e.g. the
            file resolved) or raises (a link leading where files may not be read from).
        max_pixels: the largest frame read (``max_frame_pixels``).
    """
    files = list_frame_files(folder)
    selection = selection.within(str(folder), len(files))
    chosen = files[selection.start : selection.last + 1 : selection.step]
    frames, first_shape = [], None
    for path in chosen:
        array = image_to_array(Path(check_file(path)) if check_file is not None else path, max_pixels)
        first_shape = first_shape or array.shape
        if array.shape != first_shape:
            raise VideoError(f"the frames in {folder} have different sizes {sorted({first_shape, array.shape})}: "
                             "use frames of one size")
        frames.append(_fitted(torch.from_numpy(array), size, mode))
    return torch.stack(frames), None


def _fitted(frame: torch.Tensor, size: tuple[int, int] | None, mode: str) -> torch.Tensor:
    """One ``(H, W, 3)`` frame brought to ``size`` = ``(width, height)`` (None: as it is)."""
    return frame if size is None else fit_frames(frame[None], size[0], size[1], mode)[0]


def _too_short_message(name: str, available: int, selection: ClipSelection) -> str:
    if selection.last is None:
        return f"{name} has {available} frames, so start frame {selection.start} is past its end: lower the start"
    return (
        f"{name} has {available} frames, but start {selection.start}, frame count {selection.count} "
        f"and every {selection.step} frame(s) need frame {selection.last}: lower the frame count, the "
        f"start or every-n-th"
    )


def _open(source: str | os.PathLike | BinaryIO):
    import av

    if not hasattr(source, "read"):
        if not os.path.isfile(source):
            raise VideoError(f"the video file {source} does not exist")
        if os.path.getsize(source) == 0:
            raise VideoError(f"the video file {source} is empty (0 bytes): upload it again")
        source = str(source)
    path = getattr(source, "name", source)
    try:
        container = av.open(source)
    except (av.error.FFmpegError, OSError, ValueError) as e:
        raise VideoError(f"cannot read {path} as a video ({e}): is it a complete video file?") from e
    if not container.streams.video:
        container.close()
        raise VideoError(f"{path} has no video stream")
    return container


def _decode_frames(container) -> Iterator:
    import av

    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    try:
        yield from container.decode(stream)
    except av.error.FFmpegError as e:
        raise VideoError(f"the video is damaged and stopped decoding ({e})") from e


def read_video(
    path: str | os.PathLike | BinaryIO,
    selection: ClipSelection,
    on_frame: Callable[[], None] | None = None,
    *,
    size: tuple[int, int] | None = None,
    mode: str = "crop",
    max_pixels: int | None = None,
) -> tuple[torch.Tensor, float]:
    """Decodes only the selected frames of a video file.

    Frames before ``selection.start`` are decoded and dropped without conversion, and decoding
    stops after the last selected frame, so memory holds only the frames asked for.

    Args:
        path: video file (or an open binary file object).
        selection: which frames to keep.
        on_frame: called once per decoded frame (for progress and cancel).
        size, mode: ``(width, height)`` to bring each frame to as soon as it is decoded (``fit_frames``), so
            memory never holds more than one full-size frame; None keeps the stream's size.
        max_pixels: the largest frame decoded (``max_frame_pixels``): the stream's declared size is checked
            before the first frame is decoded (a GIF of a few hundred bytes can declare 16000x16000).

    Returns:
        frames ``(N, H, W, 3)`` float32 in 0..1 and the stream's frame rate in frames per second.
    """
    container = _open(path)
    name = str(getattr(path, "name", path))
    with container:
        stream = container.streams.video[0]
        check_frame_size(name, stream.codec_context.width, stream.codec_context.height, max_pixels)
        rate = stream.average_rate or stream.guessed_rate or Fraction(24)
        frames: list[torch.Tensor] = []
        index = -1
        for index, frame in enumerate(_decode_frames(container)):
            if on_frame is not None:
                on_frame()
            if selection.wanted(index):
                if len(frames) == MAX_FRAMES:  # only "all frames" gets here: refused before memory fills
                    selection.within(name, index + 1)
                check_frame_size(name, frame.width, frame.height, max_pixels)  # a stream may change size
                data = torch.from_numpy(frame.to_ndarray(format="rgb24")).float().div_(255.0)
                frames.append(_fitted(data, size, mode))
            if selection.last is not None and index >= selection.last:
                break
        selection.within(name, index + 1)  # too short
    return torch.stack(frames), float(rate)


def select_frames(frames: torch.Tensor, selection: ClipSelection) -> torch.Tensor:
    """The selected frames of an in-memory clip ``(N, H, W, C)``."""
    selection = selection.within("the video", int(frames.shape[0]))
    return frames[selection.start : selection.last + 1 : selection.step]


def read_clip(path: str | os.PathLike | BinaryIO, selection: ClipSelection, on_frame=None, *,
              size: tuple[int, int] | None = None, mode: str = "crop",
              check_file: Callable[[Path], str | os.PathLike] | None = None,
              max_pixels: int | None = None) -> tuple[torch.Tensor, float | None]:
    """A video file or a folder of numbered frames -> ``(N, H, W, 3)`` frames and fps (None for folders).

    ``size`` = ``(width, height)`` resizes frame by frame (``mode`` as ``fit_frames``); ``check_file`` vets
    each frame file of a folder before it is read; ``max_pixels`` bounds the size a file may declare
    (``read_video``, ``read_frame_folder``)."""
    if not hasattr(path, "read") and os.path.isdir(path):
        return read_frame_folder(path, selection, size=size, mode=mode, check_file=check_file, max_pixels=max_pixels)
    return read_video(path, selection, on_frame, size=size, mode=mode, max_pixels=max_pixels)


def clip_length(source: str | os.PathLike | BinaryIO) -> int | None:
    """How many frames a clip has: a folder's frame files, or what a video file declares (None when it
    declares nothing; nothing is decoded). A file object is left where it was."""
    if not hasattr(source, "read") and os.path.isdir(source):
        return len(list_frame_files(source))
    position = source.tell() if hasattr(source, "read") else None
    try:
        with _open(source) as container:
            return container.streams.video[0].frames or None
    finally:
        if position is not None:
            source.seek(position)


def check_clip_size(width: int, height: int) -> None:
    """Raises ``VideoError`` unless ``width`` x ``height`` is a clip size SVD can take: within ClipConfig's
    ranges and multiples of their step, 64 (the nodes' Load Video and the command line's ``--size``)."""
    check_setting(ClipConfig, "width", width, error=VideoError)
    check_setting(ClipConfig, "height", height, error=VideoError)
    step = int(setting_of(ClipConfig, "width").step)
    if width % step or height % step:
        raise VideoError(f"width and height must be multiples of {step} for SVD (got {width}x{height})")


def fit_frames(frames: torch.Tensor, width: int, height: int, mode: str = "crop") -> torch.Tensor:
    """Resizes ``(N, H, W, C)`` frames to ``(N, height, width, C)``.

    Args:
        mode: ``crop`` scales to cover the target and cuts the overflow at the centre; ``pad`` scales
            to fit inside and pads with black; ``stretch`` scales each axis on its own.
    """
    if mode not in FIT_MODES:
        raise VideoError(f"unknown resize mode {mode!r}: use one of {', '.join(FIT_MODES)}")
    n, h, w, c = frames.shape
    if (h, w) == (height, width):
        return frames
    x = frames.permute(0, 3, 1, 2)
    if mode == "stretch":
        out = _resize(x, height, width)
    else:
        scale = max(height / h, width / w) if mode == "crop" else min(height / h, width / w)
        sh, sw = max(1, round(h * scale)), max(1, round(w * scale))
        x = _resize(x, sh, sw)
        if mode == "crop":
            top, left = (sh - height) // 2, (sw - width) // 2
            out = x[:, :, top : top + height, left : left + width]
        else:
            top, left = (height - sh) // 2, (width - sw) // 2
            out = F.pad(x, (left, width - sw - left, top, height - sh - top))
    return out.permute(0, 2, 3, 1).contiguous()


def preview_frames(frames: torch.Tensor, max_width: int = 512) -> torch.Tensor:
    """Small copies of ``(N, H, W, C)`` frames for a node's player: at most ``max_width`` wide, aspect kept
    (frames already that small are returned as they are)."""
    n, h, w, _ = frames.shape
    if w <= max_width:
        return frames
    scale = max_width / w
    return fit_frames(frames, max_width, max(1, round(h * scale)), mode="stretch")


def _resize(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    antialias = height < x.shape[-2] or width < x.shape[-1]
    return F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False, antialias=antialias).clamp_(0, 1)


def write_video(path: str | os.PathLike, frames: torch.Tensor, fps: float, crf: int = 18) -> Path:
    """Writes ``(N, H, W, 3)`` (or ``(N, H, W)`` grey) frames in 0..1 as an H.264 mp4, atomically."""
    import av

    if frames.ndim == 3:
        frames = frames[..., None].expand(-1, -1, -1, 3)
    data = (frames.detach().float().clamp(0, 1) * 255.0 + 0.5).to(torch.uint8).cpu().numpy()
    n, h, w, _ = data.shape
    if h % 2 or w % 2:
        raise VideoError(f"H.264 needs an even width and height, got {w}x{h}")
    rate = Fraction(fps).limit_denominator(1001) if fps > 0 and math.isfinite(fps) else Fraction(24)
    with atomic_path(path) as tmp:
        with av.open(str(tmp), mode="w", format="mp4") as out:
            stream = out.add_stream("libx264", rate=rate)
            stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
            stream.options = {"crf": str(crf)}
            for frame in data:
                for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                    out.mux(packet)
            for packet in stream.encode():
                out.mux(packet)
    return Path(path)
