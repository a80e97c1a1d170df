"""Command line: ``python -m recapture anchor|sample ...`` (the same library code as the nodes)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import torch

from .files import atomic_path

DEPTH_KINDS = ("metric", "inverse", "relative")


def _device(name: str) -> torch.device:
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def _read_depth(path: str, selection, width_height) -> torch.Tensor:
    """A ``.npy`` ``(N, H, W)`` (all of it: it is the depth of the selected frames) or a depth video / folder."""
    from .depth import depth_from_image
    from .video import fit_frames, read_clip

    if path.endswith(".npy"):
        if not os.path.isfile(path):
            raise ValueError(f"the depth file {path} does not exist")
        depth = torch.from_numpy(np.load(path, allow_pickle=False).astype(np.float32))
        if depth.ndim != 3:
            raise ValueError(f"the depth .npy must have shape (N, H, W), got {tuple(depth.shape)}")
        return depth if width_height is None else fit_frames(depth[..., None], *width_height)[..., 0]
    frames, _ = read_clip(path, selection)
    if width_height is not None:
        frames = fit_frames(frames, *width_height)
    return depth_from_image(frames)


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 1024x576, got {text!r}") from None
    return w, h


def cmd_anchor(args: argparse.Namespace) -> None:
    from . import camera
    from .pointcloud import make_point_cloud
    from .render import render_anchor
    from .video import ClipSelection, fit_frames, read_clip, write_video

    selection = ClipSelection(start=args.start, count=args.frames, step=args.every)
    frames, fps = read_clip(args.video, selection)
    if args.size is not None:
        frames = fit_frames(frames, *args.size)
    depth = _read_depth(args.depth, selection, args.size)
    cloud = make_point_cloud(frames, depth, kind=args.depth_kind, fov_deg=args.fov, near=args.near, far=args.far,
                             edge_threshold=args.edge_threshold)
    if args.camera_file:
        path = camera.resample_path(camera.load_path_file(args.camera_file), cloud.num_frames)
    else:
        pivot = args.pivot_distance or camera.pivot_distance_from_depth(cloud.depth[0])
        path = camera.preset_path(args.camera, cloud.num_frames, args.amount, pivot_distance=pivot,
                                  easing=args.easing, source_fov_deg=args.fov)
    device = _device(args.device)
    print(f"rendering {cloud.num_frames} frames at {cloud.width}x{cloud.height} on {device}", file=sys.stderr)
    anchor, mask = render_anchor(
        type(cloud)(**{k: (v.to(device) if torch.is_tensor(v) else v) for k, v in vars(cloud).items()}),
        type(path)(poses=path.poses.to(device), fov_deg=path.fov_deg.to(device)),
        dilate_holes=args.dilate_holes)
    anchor, mask = anchor.cpu(), mask.cpu()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    fps = fps or args.fps
    write_video(out / "anchor.mp4", anchor, fps / args.every)
    write_video(out / "mask.mp4", mask, fps / args.every)
    with atomic_path(out / "anchor.npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, anchor=anchor.numpy().astype(np.float32), mask=mask.numpy().astype(np.float32))
    camera.save_path_json(path, out / "camera_path.json")
    print(f"wrote {out / 'anchor.mp4'}, {out / 'mask.mp4'}, {out / 'anchor.npz'}, {out / 'camera_path.json'} "
          f"(valid pixels: {mask.mean().item():.1%})", file=sys.stderr)


def cmd_sample(args: argparse.Namespace) -> None:
    from .sample import write_sample

    files = write_sample(Path(args.out), num_frames=args.frames, width=args.size[0], height=args.size[1])
    print("\n".join(str(f) for f in files))


def build_parser() -> argparse.ArgumentParser:
    from .camera import EASINGS, PRESETS

    parser = argparse.ArgumentParser(prog="python -m recapture", description=(
        "ReCapture: re-film a video along a new camera path. `anchor` renders Stage 1 (anchor video and "
        "validity mask); `sample` writes the bundled synthetic sample clip with exact depth."))
    sub = parser.add_subparsers(dest="command", required=True)

    a = sub.add_parser("anchor", help="render the anchor video and validity mask for a new camera path",
                       description="Each frame plus its depth becomes a point cloud that is rendered from the "
                                   "new camera: DIR/anchor.mp4, DIR/mask.mp4 (white = valid), DIR/anchor.npz "
                                   "(float32 anchor (N,H,W,3) and mask (N,H,W) in 0..1), DIR/camera_path.json.")
    a.add_argument("--video", required=True, help="video file, or folder of numbered PNG/JPG frames")
    a.add_argument("--depth", required=True,
                   help="depth of those frames: .npy of shape (N,H,W), or a depth video / frames folder (grey)")
    a.add_argument("--depth-kind", choices=DEPTH_KINDS, required=True,
                   help="metric: z-depth in scene units; inverse: relative inverse depth, bright = near (most "
                        "depth models); relative: bright = far")
    a.add_argument("--fov", type=float, default=60.0, help="horizontal field of view of the source camera, degrees")
    a.add_argument("--near", type=float, default=1.0, help="nearest distance for relative depth (scene units)")
    a.add_argument("--far", type=float, default=10.0, help="farthest distance for relative depth (scene units)")
    a.add_argument("--edge-threshold", type=float, default=0.04,
                   help="drop points on depth jumps larger than this relative step (0 keeps all)")
    move = a.add_mutually_exclusive_group(required=True)
    move.add_argument("--camera", choices=PRESETS, help="camera move preset")
    move.add_argument("--camera-file", help="camera path file: ReCapture JSON, RealEstate10K .txt, NeRF transforms.json")
    a.add_argument("--amount", type=float, default=20.0,
                   help="preset amount: degrees (orbit/pan/tilt/roll), percent of the subject distance "
                        "(truck/pedestal/dolly), percent focal-length change (zoom: 50 = x1.5)")
    a.add_argument("--easing", choices=EASINGS, default="ease_in_out", help="speed profile of the move")
    a.add_argument("--pivot-distance", type=float, default=0.0,
                   help="orbit pivot distance (0: the depth at the image centre)")
    a.add_argument("--start", type=int, default=0, help="first frame")
    a.add_argument("--frames", type=int, default=14, help="number of frames")
    a.add_argument("--every", type=int, default=1, help="take every n-th frame")
    a.add_argument("--size", type=_size, default=None, help="resize (crop) frames and depth to WxH, e.g. 1024x576")
    a.add_argument("--fps", type=float, default=24.0, help="frame rate for frame folders")
    a.add_argument("--dilate-holes", type=int, default=0, help="grow the holes by this many pixels")
    a.add_argument("--device", default="auto", help="auto, cpu, cuda, mps")
    a.add_argument("--out", required=True, help="output folder")
    a.set_defaults(func=cmd_anchor)

    s = sub.add_parser("sample", help="write the synthetic sample clip with exact depth",
                       description="Writes recapture_sample.mp4 and recapture_sample_depth/ (16-bit PNG inverse "
                                   "depth; near and far are printed in its README) into OUT.")
    s.add_argument("--out", required=True, help="output folder (e.g. ComfyUI's input folder)")
    s.add_argument("--frames", type=int, default=14)
    s.add_argument("--size", type=_size, default=(1024, 576))
    s.set_defaults(func=cmd_sample)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (ValueError, OSError) as e:  # our errors are ValueErrors whose message names the fix
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
