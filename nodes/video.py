"""ReCaptureLoadVideo: the user's clip, trimmed and sized for SVD."""

from __future__ import annotations

import os

import folder_paths

from ..recapture.config import ClipConfig
from ..recapture.video import (VIDEO_EXTENSIONS, ClipSelection, check_clip_size, clip_length, fit_frames,
                               has_frames, list_frame_files, read_clip, select_frames)
from ._api import (CATEGORY_VIDEO, InputImpl, InvalidInput, Progress, check_inputs, input_file_inside, input_files,
                   input_path, inside, io, search_aliases, setting_input)


NO_FOLDER = "(none: use the video)"
NOT_LINKED = "(not linked)"  # validate_inputs' default for video_input: linked inputs arrive as None


def _frame_folders() -> list[str]:
    """Sub-folders of the input folder that hold image frames (shown with a trailing '/'); links that lead
    outside the folder are left out."""
    root = folder_paths.get_input_directory()
    return sorted(n + "/" for n in os.listdir(root)
                  if not n.startswith(".") and os.path.isdir(os.path.join(root, n)) and inside(root, n)
                  and has_frames(os.path.join(root, n)))


MAX_PREVIEW_FRAMES = 240


def folder_preview(name: str) -> dict:
    """What the node's preview plays for a frames folder (web/load_video.js): ``{"frames": [{filename,
    subfolder, type: "input"}...], "total": n}`` for ComfyUI's /view, the first ``MAX_PREVIEW_FRAMES`` in
    the order the node reads them. Raises ``ValueError`` with the message for the user (a name outside the
    input folder, not a folder of frames); frames that are links leading out of it are left out."""
    if not isinstance(name, str) or name == NO_FOLDER:
        raise ValueError("'folder' must be one of the node's frames_folder choices")
    path = input_path(name)
    if not os.path.isdir(path):
        raise ValueError(f"{name!r} is not a folder in ComfyUI's input folder: pick one from frames_folder")
    root = os.path.realpath(folder_paths.get_input_directory())
    subfolder = os.path.relpath(path, root).replace(os.sep, "/")
    files = []
    for file in list_frame_files(path):
        try:
            input_file_inside(file)
        except ValueError:
            continue
        files.append({"filename": file.name, "subfolder": subfolder, "type": "input"})
    return {"frames": files[:MAX_PREVIEW_FRAMES], "total": len(files)}


@search_aliases("re-film", "load clip", "frames folder", "video loader")
class ReCaptureLoadVideo(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ReCaptureLoadVideo",
            display_name="ReCapture Load Video",
            category=CATEGORY_VIDEO,
            description=(
                "Loads the clip to re-film: a video from the input folder (upload button), a folder of "
                "numbered frames, or a connected core VIDEO. Decodes only the frames it needs and sizes "
                "them for SVD (multiples of 64)."
            ),
            inputs=[
                io.Combo.Input("video", options=input_files(VIDEO_EXTENSIONS), upload=io.UploadType.video,
                               tooltip="A video file in ComfyUI's input folder (upload with the button)."),
                io.Combo.Input("frames_folder", options=[NO_FOLDER] + _frame_folders(), default=NO_FOLDER,
                               tooltip="Or a sub-folder of the input folder with numbered image frames; used "
                                       "instead of the video. 16-bit PNG frames keep their precision (depth)."),
                *(setting_input(ClipConfig, name) for name in ("start_frame", "frame_count", "every_nth", "width",
                                                               "height", "resize")),
                io.Video.Input("video_input", optional=True,
                               tooltip="Optional core VIDEO (e.g. from Load Video); used instead of the file."),
            ],
            outputs=[
                io.Image.Output("frames", display_name="frames", tooltip="The selected frames, resized."),
                io.Float.Output("fps", display_name="fps", tooltip="Frame rate of the selection (source fps / every_nth; 24 for "
                                               "frame folders)."),
                io.Int.Output("count", display_name="count", tooltip="Number of frames."),
            ],
        )

    @classmethod
    def validate_inputs(cls, video: str, frames_folder: str, width: int, height: int, resize: str,
                        video_input=NOT_LINKED) -> bool | str:
        # Only these are declared, so ComfyUI still checks the other inputs' ranges. The video need not be
        # in the list when a frames folder or a linked core VIDEO is used instead.
        used = {"frames_folder": frames_folder, "resize": resize, "width": width, "height": height}
        if frames_folder == NO_FOLDER and video_input == NOT_LINKED:
            used["video"] = video
        check_inputs(cls, used, input_folder=("video", "frames_folder"))  # raises InvalidInput
        if width is None or height is None:  # linked: checked when it runs
            return True
        try:
            check_clip_size(width, height)
        except ValueError as e:  # once, not once per declared input (see InvalidInput)
            raise InvalidInput(f"ReCapture Load Video: {e}") from None
        return True

    @classmethod
    def fingerprint_inputs(cls, video: str, frames_folder: str, video_input=NOT_LINKED, **_) -> str:
        if video_input != NOT_LINKED:  # a linked core VIDEO is used, not the file
            return ""
        path = input_path(video if frames_folder == NO_FOLDER else frames_folder)
        if os.path.isdir(path):
            return ";".join(f"{p.name}:{p.stat().st_mtime_ns}" for p in list_frame_files(path))
        return str(os.path.getmtime(path)) if os.path.exists(path) else ""

    @classmethod
    def execute(cls, video: str, frames_folder: str, start_frame: int, frame_count: int, every_nth: int,
                width: int, height: int, resize: str, video_input=None) -> io.NodeOutput:
        selection = ClipSelection(start=start_frame, count=frame_count, step=every_nth)
        check_clip_size(width, height)
        if video_input is not None and not isinstance(video_input, InputImpl.VideoFromFile):
            # A video made of frames in memory (core Create Video): nothing to decode.
            components = video_input.get_components()
            frames, fps = select_frames(components.images, selection), float(components.frame_rate)
        else:
            if video_input is not None:
                source = video_input.get_stream_source()
            else:
                source = input_path(video if frames_folder == NO_FOLDER else frames_folder)
            # frames decoded, up to the last one taken (all: the clip's declared length)
            progress = Progress(selection.last + 1 if selection.last is not None else clip_length(source) or 1,
                                unit="frame")
            # each frame is sized as it is read, and a frame in a folder that links out of input/ is refused
            frames, fps = read_clip(source, selection, on_frame=lambda: progress.advance(), size=(width, height),
                                    mode=resize, check_file=input_file_inside)
        frames = fit_frames(frames, width, height, resize)
        fps = (fps if fps else 24.0 * every_nth) / every_nth
        return io.NodeOutput(frames, fps, int(frames.shape[0]))
