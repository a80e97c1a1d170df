"""Command line: ``python -m recapture anchor|train|sample|run|batch ...`` (the same library code as the nodes).

Options that are settings of the method are built from ``recapture.config`` (default, range, help), as
the nodes' inputs are."""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

import numpy as np
import torch

from .config import (DEPTH_KINDS, FROM_LORA, PRESETS, CameraConfig, ClipConfig, PointCloudConfig, RenderConfig,
                     SampleConfig, TrainConfig, conditioning_for, memory_from_switch, setting_of)
from .files import atomic_path
from .lora import DEFAULT_NAME as DEFAULT_LORA_NAME
from .memory import OutOfMemory
from .demo_clip import SAMPLE_FRAMES
from .video import ALL_FRAMES

# The config fields the command line offers, with their flags: training's, sampling's, and those the
# two share (one value serves both, as SVD's conditioning must be the same in training and sampling).
TRAIN_FLAGS = {"steps": "--steps", "learning_rate": "--lr", "rank": "--rank", "spatial_augment": "--spatial-augment"}
SAMPLE_FLAGS = {"steps": "--sample-steps", "min_guidance": "--min-guidance", "max_guidance": "--max-guidance",
                "refine_strength": "--refine", "decode_chunk_size": "--decode-chunk-size"}
CLIP_FLAGS = {"start_frame": "--start", "frame_count": "--frames", "every_nth": "--every"}
CAMERA_FLAGS = {"amount": "--amount", "easing": "--easing", "pivot_distance": "--pivot-distance"}
POINT_CLOUD_FLAGS = {"fov_deg": "--fov", "near": "--near", "far": "--far", "edge_threshold": "--edge-threshold",
                     "align_depth": "--align-depth"}
SHARED_FLAGS = {"seed": "--seed", "fps": "--svd-fps", "motion_bucket_id": "--motion-bucket-id",
                "noise_aug_strength": "--noise-aug-strength", "window_overlap": "--window-overlap"}


def _device(name: str) -> torch.device:
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def _read_depth(path: str, selection, width_height) -> torch.Tensor:
    """A ``.npy`` ``(N, H, W)`` or a depth video / folder, for the selected frames. The ``.npy`` holds either
    the selected frames' depth (as many maps as frames) or the whole video's (one map per source frame:
    the selection is taken from it)."""
    from .depth import depth_from_image
    from .video import fit_frames, read_clip, select_frames

    if path.endswith(".npy"):
        if not os.path.isfile(path):
            raise ValueError(f"the depth file {path} does not exist")
        depth = torch.from_numpy(np.load(path, allow_pickle=False).astype(np.float32))
        if depth.ndim != 3:
            raise ValueError(f"the depth .npy must have shape (N, H, W), got {tuple(depth.shape)}")
        if len(depth) != selection.count:
            if len(depth) <= selection.last:
                raise ValueError(
                    f"the depth .npy has {len(depth)} maps: give one per selected frame ({selection.count}) or one "
                    f"per source frame (at least {selection.last + 1} for --start {selection.start}, --frames "
                    f"{selection.count}, --every {selection.step})")
            depth = select_frames(depth[..., None], selection)[..., 0]  # the whole video's depth
        return depth if width_height is None else fit_frames(depth[..., None], *width_height)[..., 0]
    frames, _ = read_clip(path, selection, size=width_height)
    return depth_from_image(frames)


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 1024x576, got {text!r}") from None
    return w, h


def render_stage1(args: argparse.Namespace):
    """Reads the clip and its depth, renders the anchor: (frames, fps, anchor, mask, camera path)."""
    from . import camera
    from .pointcloud import make_point_cloud
    from .render import render_anchor
    from .video import ClipSelection, check_clip_size, read_clip

    selection = ClipSelection(start=args.start, count=args.frames, step=args.every)
    if args.size is not None:
        check_clip_size(*args.size)
    frames, fps = read_clip(args.video, selection, size=args.size)  # sized as read: long clips stay small
    selection = ClipSelection(args.start, len(frames), args.every)  # "all" is now a count
    depth = _read_depth(args.depth, selection, args.size)
    cloud = make_point_cloud(frames, depth, kind=args.depth_kind, fov_deg=args.fov, near=args.near, far=args.far,
                             edge_threshold=args.edge_threshold, align_depth=args.align_depth)
    path = camera.choose_camera_path(args.camera, args.amount, args.easing, cloud.num_frames, args.pivot_distance,
                                     camera_file=args.camera_file or None, cloud=cloud, source_fov_deg=args.fov).path
    device = _device(args.device)
    print(f"rendering {cloud.num_frames} frames at {cloud.width}x{cloud.height} on {device}", file=sys.stderr)
    anchor, mask = render_anchor(cloud, path, dilate_holes=args.dilate_holes, device=device)
    return frames, (fps or args.fps) / args.every, anchor.cpu(), mask.cpu(), path


def write_stage1(out: Path, fps: float, anchor: torch.Tensor, mask: torch.Tensor, path) -> None:
    from . import camera
    from .video import write_video

    out.mkdir(parents=True, exist_ok=True)
    write_video(out / "anchor.mp4", anchor, fps)
    write_video(out / "mask.mp4", mask, fps)
    with atomic_path(out / "anchor.npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, anchor=anchor.numpy().astype(np.float32), mask=mask.numpy().astype(np.float32))
    camera.save_path_json(path, out / "camera_path.json")
    print(f"wrote {out / 'anchor.mp4'}, {out / 'mask.mp4'}, {out / 'anchor.npz'}, {out / 'camera_path.json'} "
          f"(valid pixels: {mask.mean().item():.1%})", file=sys.stderr)


def cmd_anchor(args: argparse.Namespace) -> None:
    _, fps, anchor, mask, path = render_stage1(args)
    write_stage1(Path(args.out), fps, anchor, mask, path)


def _progress(total: int, label: str):
    """A progress bar on stderr; returns (per-step callback, close). Training steps also show the losses."""
    from tqdm import tqdm

    bar = tqdm(total=total, desc=label, file=sys.stderr, leave=True)

    def step(_index: int, temporal: float | None = None, spatial: float | None = None) -> None:
        if temporal is not None:
            bar.set_postfix(temporal=f"{temporal:.4f}", spatial=f"{spatial:.4f}", refresh=False)
        bar.update(1)

    return step, bar.close


def _window_progress(steps: int, windows: int, label: str):
    """A progress bar on stderr over ``steps`` denoising steps of ``windows`` windows each, moving a window
    at a time (tqdm's rate is then the time per window); returns (``on_step(step, window)``, close)."""
    from tqdm import tqdm

    unit = "window" if windows > 1 else "step"
    bar = tqdm(total=steps * windows, desc=f"{label} ({windows} windows a step)" if windows > 1 else label,
               unit=unit, file=sys.stderr, leave=True)
    return (lambda _step, _window: bar.update(1)), bar.close


def config_from_args(config: type, flags: dict[str, str], args: argparse.Namespace, lora=None):
    """A ``TrainConfig`` / ``SampleConfig`` from the parsed options named in ``flags`` (and the shared
    ones); the rest keep their defaults. Sampling with a ``lora``: SVD's conditioning options left out
    are the LoRA's."""
    values = {name: getattr(args, _dest(flag)) for name, flag in (flags | SHARED_FLAGS).items()}
    if lora is not None:
        values |= vars(conditioning_for(lora.conditioning, **{name: values[name] for name in FROM_LORA}))
    return config(**values, memory=memory_from_switch(args.low_memory))


def _train(args, models, anchor, mask, source):
    from .lora import save_lora_pair
    from .train import train_recapture_lora

    config = config_from_args(TrainConfig, TRAIN_FLAGS, args)
    step, close = _progress(config.steps, "train")
    try:
        lora = train_recapture_lora(models, anchor, mask, source, config, on_step=step)
    finally:
        close()
    save_lora_pair(args.out, args.lora_name, lora)
    return lora


def _sample(args, models, lora, anchor, mask, fps: float) -> torch.Tensor:
    """Samples and refines; writes OUT/recaptured.mp4 and returns its ``(N, H, W, 3)`` frames in 0..1."""
    from .sampling import refine_steps, sample_video, sdedit, window_count
    from .video import write_video

    config = config_from_args(SampleConfig, SAMPLE_FLAGS, args, lora)
    windows = window_count(models, len(anchor), config)
    step, close = _window_progress(config.steps, windows, "sample")
    try:
        frames = sample_video(models, lora, anchor, len(anchor), config, on_step=step, mask=mask)
    finally:
        close()
    if config.refine_strength > 0:
        step, close = _window_progress(refine_steps(models, config), windows, "refine")
        try:
            frames = sdedit(models, lora, frames, config, on_step=step)
        finally:
            close()
    write_video(Path(args.out) / "recaptured.mp4", frames, fps)
    return frames


def _load_models(args):
    from .svd import load_svd

    device = _device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    return load_svd(args.svd, dtype, device)


def _load_anchor(file: str) -> tuple[torch.Tensor, torch.Tensor]:
    if not os.path.isfile(file):
        raise ValueError(f"the anchor file {file} does not exist: make it with `python -m recapture anchor`")
    data = np.load(file, allow_pickle=False)
    return torch.from_numpy(data["anchor"]), torch.from_numpy(data["mask"])


def cmd_train(args: argparse.Namespace) -> None:
    from .video import ClipSelection, fit_frames, read_clip

    anchor, mask = _load_anchor(args.anchor)
    source, _ = read_clip(args.video, ClipSelection(start=args.start, count=len(anchor), step=args.every))
    source = fit_frames(source, anchor.shape[2], anchor.shape[1])
    _train(args, _load_models(args), anchor, mask, source)


def cmd_sample(args: argparse.Namespace) -> None:
    from .lora import load_lora_pair

    anchor, mask = _load_anchor(args.anchor)
    lora = load_lora_pair(args.lora_temporal, args.lora_spatial)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    _sample(args, _load_models(args), lora, anchor, mask, args.fps)


def cmd_run(args: argparse.Namespace) -> None:
    frames, fps, anchor, mask, path = render_stage1(args)
    write_stage1(Path(args.out), fps, anchor, mask, path)
    models = _load_models(args)
    lora = _train(args, models, anchor, mask, frames)
    _sample(args, models, lora, anchor, mask, fps)
    print(f"wrote {Path(args.out) / 'recaptured.mp4'}", file=sys.stderr)


def cmd_batch(args: argparse.Namespace) -> int:
    from .batch import run_batch

    return run_batch(args)


def cmd_demo_clip(args: argparse.Namespace) -> None:
    from .demo_clip import write_demo_clip

    files = write_demo_clip(Path(args.out), num_frames=args.frames, width=args.size[0], height=args.size[1])
    print("\n".join(str(f) for f in files))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m recapture", description=(
        "ReCapture: re-film a video along a new camera path. `anchor` renders Stage 1 (anchor video and "
        "validity mask), `train` fine-tunes the two LoRAs, `sample` samples and refines, `run` does all of it; "
        "`batch` runs many clips on Ray; `demo-sample` writes the bundled synthetic clip with exact depth."))
    sub = parser.add_subparsers(dest="command", required=True)

    a = sub.add_parser("anchor", help="render the anchor video and validity mask for a new camera path",
                       description="Each frame plus its depth becomes a point cloud that is rendered from the "
                                   "new camera: DIR/anchor.mp4, DIR/mask.mp4 (white = valid), DIR/anchor.npz "
                                   "(float32 anchor (N,H,W,3) and mask (N,H,W) in 0..1), DIR/camera_path.json.")
    _anchor_options(a)
    _device_option(a)
    a.set_defaults(func=cmd_anchor)

    s = sub.add_parser("demo-sample", help="write the synthetic sample clip with exact depth",
                       description="Writes recapture_sample.mp4 and recapture_sample_depth/ (16-bit PNG inverse "
                                   "depth; near and far are printed in its README) into OUT.")
    s.add_argument("--out", required=True, help="output folder (e.g. ComfyUI's input folder)")
    s.add_argument("--frames", type=_number(int, 1, setting_of(ClipConfig, "frame_count").max),
                   default=SAMPLE_FRAMES, help=f"Frames of the demo clip (default {SAMPLE_FRAMES}: the 14-frame "
                                               "workflows take its first 14, the long-clip workflow all).")
    s.add_argument("--size", type=_size, default=(1024, 576))
    s.set_defaults(func=cmd_demo_clip)

    t = sub.add_parser("train", help="fine-tune the temporal and spatial LoRAs on an anchor and its source video",
                       description="Writes OUT/<lora-name>_temporal.safetensors and _spatial.safetensors (core "
                                   "ComfyUI's LoRA format).")
    t.add_argument("--anchor", required=True, help="anchor.npz written by `anchor`")
    t.add_argument("--video", required=True, help="the source video or frames folder (resized to the anchor)")
    _setting_option(t, ClipConfig, "start_frame", "--start", "First source frame (as for `anchor`).")
    _setting_option(t, ClipConfig, "every_nth", "--every", "Every n-th source frame (as for `anchor`).")
    _svd_options(t)
    _train_options(t)
    t.add_argument("--out", required=True, help="output folder")
    t.set_defaults(func=cmd_train)

    p = sub.add_parser("sample", help="sample the re-filmed video with a trained LoRA pair (and refine it)",
                       description="Writes OUT/recaptured.mp4.")
    p.add_argument("--anchor", required=True, help="anchor.npz written by `anchor` (size, frame count, prompt)")
    p.add_argument("--lora-temporal", required=True, help="the *_temporal.safetensors file")
    p.add_argument("--lora-spatial", required=True, help="the *_spatial.safetensors file")
    p.add_argument("--fps", type=float, default=24.0, help="frame rate of the written video")
    _svd_options(p, from_lora=True)
    _sample_options(p)
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=cmd_sample)

    r = sub.add_parser("run", help="the whole method: anchor, train, sample, refine",
                       description="Everything `anchor` writes, the LoRA files and OUT/recaptured.mp4.")
    _anchor_options(r)
    _svd_options(r)
    _train_options(r)
    _sample_options(r)
    r.set_defaults(func=cmd_run)

    from .batch import add_arguments as batch_options  # no Ray needed to build the parser

    b = sub.add_parser("batch", help="re-film many clips, one `run` per line of a job file, on Ray workers",
                       description="JOBS is JSON Lines or CSV, one clip per line: `run`'s options without dashes "
                                   "(video, depth, depth_kind, camera, amount, svd...) and an optional id. Writes "
                                   "DIR/<id>/ (what `run` writes, and result.json) per finished job and "
                                   "DIR/failures.jsonl; a rerun skips finished jobs. Needs Ray: "
                                   "pip install 'comfyui-recapture[batch]'. Exit code 0: all done, 1: some "
                                   "failed, 2: bad job file or flags.")
    batch_options(b)
    b.set_defaults(func=cmd_batch)
    return parser


def _anchor_options(a: argparse.ArgumentParser) -> None:
    a.add_argument("--video", required=True, help="video file, or folder of numbered PNG/JPG frames")
    a.add_argument("--depth", required=True,
                   help="depth of those frames: .npy of shape (N,H,W), or a depth video / frames folder (grey)")
    a.add_argument("--depth-kind", choices=DEPTH_KINDS, required=True,
                   help=setting_of(PointCloudConfig, "depth_kind").help)
    for name, flag in POINT_CLOUD_FLAGS.items():
        _setting_option(a, PointCloudConfig, name, flag)
    move = a.add_mutually_exclusive_group(required=True)
    move.add_argument("--camera", choices=PRESETS, help=f"camera move preset: {setting_of(CameraConfig, 'preset').help}")
    move.add_argument("--camera-file", help="camera path file: ReCapture JSON, RealEstate10K .txt, NeRF transforms.json")
    for name, flag in CAMERA_FLAGS.items():
        _setting_option(a, CameraConfig, name, flag)
    for name, flag in CLIP_FLAGS.items():
        if name == "frame_count":
            a.add_argument(flag, type=_frame_count, default=ALL_FRAMES,
                           help="How many frames to take: a number, or all to the end of the clip; longer than one "
                                "SVD window are trained and sampled in overlapping windows (default all)")
        else:
            _setting_option(a, ClipConfig, name, flag)
    a.add_argument("--size", type=_size, default=None, help="resize (crop) frames and depth to WxH, e.g. 1024x576")
    a.add_argument("--fps", type=float, default=24.0, help="frame rate for frame folders")
    _setting_option(a, RenderConfig, "dilate_holes", "--dilate-holes")
    a.add_argument("--out", required=True, help="output folder")


def _device_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="auto (CUDA, then Apple MPS, then CPU), cpu, cuda, mps")


def _dest(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


def _number(kind: type, low, high):
    """An argparse type: a number of ``kind`` within ``[low, high]`` (the setting's range)."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a{'n integer' if kind is int else ' number'}") from None
        if not math.isfinite(value) or (low is not None and value < low) or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"{text} is outside {low:g}..{high:g}")  # NaN too
        return value
    return parse


def _frame_count(text: str) -> int:
    """``--frames``: a count within ClipConfig's range, or ``all`` (``ALL_FRAMES``)."""
    if text.strip().lower() == "all":
        return ALL_FRAMES
    return _number(int, 1, setting_of(ClipConfig, "frame_count").max)(text)


def _setting_option(p: argparse.ArgumentParser, config: type, name: str, flag: str, help: str | None = None,
                    from_lora: bool = False) -> None:
    """An option for a config field: its default, range and help from ``recapture.config``; ``from_lora``:
    left out, it is the LoRA's (None)."""
    s = setting_of(config, name)
    kind = ({"choices": s.choices} if s.choices else {"action": argparse.BooleanOptionalAction}
            if isinstance(s.default, bool) else {"type": _number(type(s.default), s.min, s.max)})
    default = None if from_lora else s.default
    shown = "the LoRA's, what it was trained with" if from_lora else s.default
    p.add_argument(flag, **kind, default=default, help=f"{help or s.help} (default {shown})")


def _svd_options(p: argparse.ArgumentParser, from_lora: bool = False) -> None:
    """The SVD model, device and shared options; ``from_lora``: SVD's conditioning defaults to the LoRA's."""
    _device_option(p)
    p.add_argument("--svd", required=True,
                   help="SVD checkpoint: svd_xt.safetensors / svd.safetensors or a diffusers-format folder")
    for name, flag in SHARED_FLAGS.items():
        _setting_option(p, TrainConfig, name, flag, "Random seed (LoRA initialisation, noise)." if name == "seed" else None,
                        from_lora=from_lora and name in FROM_LORA)
    p.add_argument("--low-memory", action="store_true",
                   help=f"Training: {setting_of(TrainConfig, 'memory').help} Sampling: "
                        f"{setting_of(SampleConfig, 'memory').help}")


def _train_options(p: argparse.ArgumentParser) -> None:
    for name, flag in TRAIN_FLAGS.items():
        _setting_option(p, TrainConfig, name, flag)
    p.add_argument("--lora-name", default=DEFAULT_LORA_NAME, help="file stem of the two LoRA files")


def _sample_options(p: argparse.ArgumentParser) -> None:
    for name, flag in SAMPLE_FLAGS.items():
        _setting_option(p, SampleConfig, name, flag, "SDEdit strength with the spatial LoRA (0: no refinement)."
                        if name == "refine_strength" else None)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code = args.func(args)  # batch returns its exit code; the others return nothing
    except OutOfMemory as e:
        print(f"error: {e.with_advice(_ways_out(e))}", file=sys.stderr)
        return 2
    except (ValueError, OSError) as e:  # our errors' messages name the fix
        print(f"error: {e}", file=sys.stderr)
        return 2
    return code or 0


def _ways_out(error: OutOfMemory) -> str:
    chunk = "" if error.stage == "training" else " with --decode-chunk-size 2"
    fewer = "fewer frames (--frames), " if error.window == error.frames else ""
    return (f"Ways out: {fewer}a lower resolution (e.g. --size {error.smaller_size()}), "
            f"--low-memory{chunk}, or close other programs using the GPU.")
