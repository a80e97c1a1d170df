"""The ComfyUI pieces every node module uses: the V3 API and progress/cancel."""

from __future__ import annotations

try:  # the versioned API, as ComfyUI's maintainers recommend; `latest` on builds without it
    from comfy_api.v0_0_2 import ComfyExtension, InputImpl, io, ui
except ImportError:  # pragma: no cover - depends on the ComfyUI build
    from comfy_api.latest import ComfyExtension, InputImpl, io, ui

import contextlib
import logging
import os
import time

import comfy.model_management
import comfy.utils
import folder_paths

__all__ = ["ComfyExtension", "InputImpl", "io", "ui", "Progress", "InvalidInput", "check_cancel", "check_inputs",
           "input_files", "input_path", "in_models", "inside", "model_path", "output_file", "releasing_memory",
           "require_finite", "search_aliases", "setting_input", "video_player", "writable_folder", "CATEGORY_VIDEO",
           "CATEGORY_DEPTH", "CATEGORY_ANCHOR", "CATEGORY_SVD", "REFRESH"]

# The node library's folders, numbered in the order the pipeline uses them (the library sorts by name).
# Depth To Point Cloud sits with depth: it is what a depth map is for, wherever the depth came from.
CATEGORY_VIDEO = "ReCapture/1 video"
CATEGORY_DEPTH = "ReCapture/2 depth & point cloud"
CATEGORY_ANCHOR = "ReCapture/3 camera & anchor"
CATEGORY_SVD = "ReCapture/4 svd"
# How a person makes files added since the page was loaded appear in the lists (the frontend's keybinding
# for "Refresh Node Definitions"); reloading the page would also lose unsaved changes.
REFRESH = "press R to refresh the node definitions"
# Found by every node of the pack, besides its own aliases.
PACK_ALIASES = ("recapture",)


def search_aliases(*aliases: str):
    """Class decorator: other words the node search finds the node by. ComfyUI's newer V3 schemas have
    ``search_aliases`` (and newer frontends search them); ComfyUI 0.3.75's have not, so they are added to
    the node's /object_info entry here, under the same key, when the schema gave none (the pack's
    frontend extension, web/node_search.js, searches them on frontends that do not)."""
    words = list(dict.fromkeys((*aliases, *PACK_ALIASES)))

    def decorate(cls):
        info_v1 = cls.GET_NODE_INFO_V1.__func__

        def with_aliases(klass) -> dict:
            info = info_v1(klass)
            if not info.get("search_aliases"):
                info["search_aliases"] = list(words)
            return info

        cls.GET_NODE_INFO_V1 = classmethod(with_aliases)
        cls.SEARCH_ALIASES = tuple(words)
        return cls

    return decorate


class InvalidInput(ValueError):
    """Raised by a node's ``validate_inputs`` (through ``check_inputs``): ComfyUI 0.3.75 reports a message
    returned from ``validate_inputs`` once per input that it declares (the same text 5-8 times), but an
    exception raised there once, on the node, as "Exception when validating inner node: <message>"."""


def check_cancel() -> None:
    """Raises ComfyUI's interrupt exception when the user pressed Cancel; never catch it."""
    comfy.model_management.throw_exception_if_processing_interrupted()


class Progress:
    """The node's progress bar and a status line under it ("step 37/400 · ... · ETA 2m 10s"); every
    advance also honours Cancel. ``windows`` > 1: each of the ``total`` steps runs that many windows of a
    long clip; the bar moves a window at a time and the line says the window and the time each takes."""

    def __init__(self, total: int, unit: str = "step", windows: int = 1):
        self._bar = comfy.utils.ProgressBar(total * windows)
        self._unit = unit
        self._windows = windows
        self._start = time.monotonic()

    def advance(self, amount: int = 1, preview=None, detail: str = "") -> None:
        """Moves the bar; ``preview`` (a PIL image) is shown in the node, as KSampler's live previews are;
        ``detail`` goes into the status line."""
        check_cancel()
        self._bar.update_absolute(self._bar.current + amount, preview=("PNG", preview, 512) if preview else None)
        _show_text(self.status(detail))

    def status(self, detail: str = "") -> str:
        done, total, windows = self._bar.current, self._bar.total, self._windows
        elapsed = time.monotonic() - self._start
        if windows == 1:
            parts = [f"{self._unit} {done}/{total}"]
        else:
            step, window = divmod(max(done - 1, 0), windows)
            parts = [f"{self._unit} {step + 1}/{total // windows}", f"window {window + 1}/{windows}"]
            if done:
                parts.append(f"{elapsed / done:.1f} s per window")
        parts += [detail] if detail else []
        if 0 < done < total:
            parts.append(f"ETA {_duration(elapsed / done * (total - done))}")
        return " · ".join(parts)


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    return f"{minutes}m {seconds:02d}s" if minutes < 60 else f"{minutes // 60}h {minutes % 60:02d}m"


def _show_text(text: str) -> None:
    """Shows ``text`` on the running node (ComfyUI's progress text); never fails the node over it."""
    try:
        from comfy_execution.utils import get_executing_context
        from server import PromptServer

        context = get_executing_context()
        if context is not None and PromptServer.instance is not None:
            PromptServer.instance.send_progress_text(text, context.node_id)
    except Exception:  # an older ComfyUI without progress text: the bar alone still works
        logging.getLogger(__name__).debug("progress text not shown", exc_info=True)


def setting_input(config: type, name: str, input_name: str | None = None, **options):
    """A node input for a field of a ``recapture.config`` class: its default, range and tooltip come from
    the field's ``Setting``; ``options`` are the input's own (optional, control_after_generate...)."""
    from ..recapture.config import setting_of

    s = setting_of(config, name)
    common = {"default": s.default, "tooltip": s.help} | options
    if s.choices:
        return io.Combo.Input(input_name or name, options=list(s.choices), **common)
    if isinstance(s.default, bool):
        return io.Boolean.Input(input_name or name, **common)
    ranged = {k: v for k, v in (("min", s.min), ("max", s.max), ("step", s.step)) if v is not None}
    kind = io.Int if isinstance(s.default, int) else io.Float
    return kind.Input(input_name or name, **(ranged | common))


@contextlib.contextmanager
def releasing_memory():
    """On any error (out of memory, Cancel...) hands cached device memory back, so the server stays usable;
    running out of memory gets the ways out in the canvas' terms."""
    from ..recapture.memory import OutOfMemory

    try:
        yield
    except OutOfMemory as error:
        comfy.model_management.soft_empty_cache()
        chunk = "" if error.stage == "training" else " with decode_chunk_size 2"
        fewer = "fewer frames, " if error.window == error.frames else ""
        raise error.with_advice(
            f"Ways out: {fewer}a lower resolution (e.g. {error.smaller_size()} in ReCapture Load Video), "
            f"dtype bf16 or fp16 in ReCapture Load SVD, low_memory on{chunk}, or close other programs using the "
            "GPU.") from error.__cause__
    except BaseException:
        comfy.model_management.soft_empty_cache()
        raise


def video_player(cls, frames, overlay=None) -> dict:
    """ui data for the pack's in-node video player (web/video_player.js): small copies of the frames,
    and optionally the same frames with an overlay the player can toggle, saved as temp previews."""
    from ..recapture.video import preview_frames

    player = {"frames": ui.PreviewImage(preview_frames(frames), cls=cls).values}
    if overlay is not None:
        player["overlay"] = ui.PreviewImage(preview_frames(overlay), cls=cls).values
    return {"recapture_player": [player]}


def check_inputs(cls, values: dict, input_folder: tuple[str, ...] = ()) -> bool:
    """What a node's ``validate_inputs`` returns, before anything of the prompt runs: True, or it raises
    ``InvalidInput`` with one message naming the node, the input and the fix (raised, not returned, so
    that ComfyUI reports it once, not once per declared input). It checks each of ``values`` (the inputs
    ``validate_inputs`` declares; ``cls``, if there, is skipped) against the node's schema, freshly made so that file lists are
    today's: a FLOAT must be a finite number in its range, an INT a whole number in its range, a COMBO one
    of its options. ComfyUI 0.3.75 skips its own min/max check for the inputs ``validate_inputs`` declares
    (for all of them if it takes ``**kwargs``: never do), its check lets NaN through, and it does not check
    V3 combos at all. ``input_folder`` names the combos that pick from ComfyUI's input folder. Linked
    inputs arrive as None: the library checks them when the node runs."""
    from ..recapture.config import check_number

    schema = cls.define_schema()
    specs = {spec.id: spec for spec in schema.inputs}
    for name, value in values.items():
        spec = specs.get(name)
        if value is None or spec is None:
            continue
        try:
            if isinstance(spec, io.Combo.Input):
                if value not in spec.options:
                    if name in input_folder:
                        try:
                            path = input_path(value)
                        except ValueError as outside:  # '../x', '/etc/x', a link leading out
                            raise ValueError(f"{name} {outside}") from None
                        if os.path.exists(path):  # '/', './', another kind of file
                            raise ValueError(f"{name} {value!r} is not one this input takes: pick one from the list "
                                             f"({spec.tooltip})")
                        raise ValueError(f"{name} {value!r} is not in ComfyUI's input folder: upload it or pick one "
                                         "from the list")
                    choices = (", ".join(map(str, spec.options)) if len(spec.options) <= 12
                               else f"{len(spec.options)} choices")
                    raise ValueError(f"{name} {value!r} is not one of its choices ({choices or 'none'}): pick one "
                                     f"from the list (files added since the page was loaded appear when you "
                                     f"{REFRESH})")
            elif isinstance(spec, (io.Float.Input, io.Int.Input)):
                check_number(name, value, spec.min, spec.max, whole=isinstance(spec, io.Int.Input))
        except ValueError as e:
            raise InvalidInput(f"{schema.display_name}: {e}") from None
    return True


def inside(root: str, name: str) -> bool:
    """Whether ``root/name`` really lies inside ``root`` once ``..`` and symlinks are resolved."""
    real_root = os.path.realpath(root)
    return os.path.commonpath([real_root, os.path.realpath(os.path.join(root, name))]) == real_root


def input_files(extensions: tuple[str, ...]) -> list[str]:
    """Names of the files in ComfyUI's input folder with one of these (lower-case) extensions; links that
    lead outside the folder are left out (``input_path`` would refuse them)."""
    root = folder_paths.get_input_directory()
    return sorted(n for n in os.listdir(root)
                  if n.lower().endswith(extensions) and os.path.isfile(os.path.join(root, n)) and inside(root, n))


def input_path(name: str) -> str:
    """A name picked in a combo -> its path inside the input folder; names that lead outside
    (``../``, absolute paths, symlinks out) are refused."""
    root = os.path.realpath(folder_paths.get_input_directory())
    path = os.path.realpath(os.path.join(root, name.rstrip("/")))
    if os.path.commonpath([root, path]) != root:
        raise ValueError(f"{name!r} is outside ComfyUI's input folder: pick a file from the list")
    return path


def input_file_inside(path: str | os.PathLike) -> str:
    """A file about to be read from a picked input sub-folder (a frame) -> its resolved path, refused when
    it is a link leading outside the input folder (the folder itself was checked by ``input_path``; each
    file in it is checked again as it is read). The message names the file, not where it leads."""
    root = os.path.realpath(folder_paths.get_input_directory())
    real = os.path.realpath(path)
    if os.path.commonpath([root, real]) != root:
        shown = os.path.relpath(os.path.abspath(path), root) if os.path.isabs(path) else str(path)
        raise ValueError(f"{shown!r} is outside ComfyUI's input folder (a link leading elsewhere): files are read "
                         "only from inside it. Put the file itself there instead of a link")
    return real


def model_path(folder_type: str, name: str) -> str:
    """A file or sub-folder ``name`` of one of ComfyUI's model folders (``depth``, ``diffusers``...),
    never outside them."""
    for root in folder_paths.get_folder_paths(folder_type):
        path = os.path.realpath(os.path.join(root, name))
        if inside(root, name) and os.path.exists(path):
            return path
    raise ValueError(f"no {name!r} in models/{folder_type}/: put it there, then {REFRESH} and pick it")


def in_models(folder_type: str, name: str) -> bool:
    """Whether ``model_path`` takes ``name``: lists of models offer only those."""
    try:
        return bool(model_path(folder_type, name))
    except ValueError:
        return False


def writable_folder(root: str, subfolder: str, what: str) -> str:
    """``root/subfolder``, created if needed, after checking that it really lies inside ``root``: a
    symlinked folder inside ``root`` that leads elsewhere is refused (``root`` itself may be a link,
    as models folders on another disk often are)."""
    real_root = os.path.realpath(root)
    folder = os.path.join(root, subfolder)
    real = os.path.realpath(folder)
    if os.path.commonpath([real_root, real]) != real_root:
        raise ValueError(f"{folder} is a link to {real}, outside {what} ({real_root}): nothing is written "
                         f"through it. Remove the link or make it a real folder inside {what}")
    os.makedirs(real, exist_ok=True)
    return folder


def output_file(prefix: str, extension: str) -> tuple[str, str]:
    """A new numbered file under the output folder -> (absolute path, path relative to output/).
    Sub-folders that are symlinks leading outside the output folder are refused."""
    out_dir = folder_paths.get_output_directory()
    writable_folder(out_dir, os.path.dirname(os.path.normpath(prefix)), "ComfyUI's output folder")
    folder, name, counter, subfolder, _ = folder_paths.get_save_image_path(prefix, out_dir)
    filename = f"{name}_{counter:05}_.{extension}"
    return os.path.join(folder, filename), os.path.join(subfolder, filename) if subfolder else filename


def require_finite(name: str, value, fix: str = "") -> None:
    """Refuses an input tensor with NaN or infinite values, naming the input and what to do, instead of
    letting them turn into a crash deep in torch or a silently black/NaN result."""
    import torch

    bad = int((~torch.isfinite(value)).sum()) if torch.is_tensor(value) and value.is_floating_point() else 0
    if bad:
        raise ValueError(
            f"the {name} input has {bad} NaN or infinite value{'s' if bad > 1 else ''} (of {value.numel()}): "
            f"{fix or 'the node that made it produced invalid numbers'}. Fix or replace that node (a "
            "division by zero or an fp16 overflow upstream is the usual cause), then queue again")
