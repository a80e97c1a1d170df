"""Times the whole method on one clip: `python bench/workflow.py [--device cuda] [--frames 14 --height 576 --width 1024]`.

The bundled synthetic scene (exact depth) -> point cloud -> 15 degree orbit -> anchor -> training (the
paper's 400 steps by default) -> sampling (25 steps) -> SDEdit refinement (strength 0.3), with the
full-size SVD-XT architecture and random weights (time and memory do not depend on weight values;
--tiny on a CPU). Prints each stage's seconds, the total and the peak GPU memory: the performance
issue's target is 4 minutes for 14 frames at 576x1024 on one H100.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from recapture import camera, synthetic  # noqa: E402
from recapture.pointcloud import make_point_cloud  # noqa: E402
from recapture.render import render_anchor  # noqa: E402
from recapture.config import SampleConfig, TrainConfig  # noqa: E402
from recapture.sampling import sample_video, sdedit  # noqa: E402
from recapture.svd import build_svd, build_tiny_svd  # noqa: E402
from recapture.train import train_recapture_lora  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--frames", type=int, default=14)
    parser.add_argument("--height", type=int, default=576)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--train-steps", type=int, default=TrainConfig.steps)
    parser.add_argument("--sample-steps", type=int, default=SampleConfig.steps)
    parser.add_argument("--refine", type=float, default=SampleConfig.refine_strength, help="SDEdit strength")
    parser.add_argument("--tiny", action="store_true", help="tiny random model (for a CPU)")
    args = parser.parse_args()
    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    models = build_tiny_svd() if args.tiny else build_svd(25, dtype, device)
    for m in (models.unet, models.vae, models.image_encoder):
        m.to(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()

    def stage(name: str, work):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        result = work()
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds[name] = time.perf_counter() - start
        print(f"{name}: {seconds[name]:.2f} s", flush=True)
        return result

    seconds: dict[str, float] = {}
    clip = synthetic.source_clip(args.frames, args.height, args.width)
    cloud = stage("point cloud", lambda: make_point_cloud(clip.frames.to(device), clip.depth.to(device), kind="metric"))
    path = camera.preset_path("orbit_left", args.frames, 15, pivot_distance=3.0)
    anchor, mask = stage("anchor", lambda: render_anchor(cloud, path))
    anchor, mask, source = anchor.cpu(), mask.cpu(), clip.frames
    lora = stage("training", lambda: train_recapture_lora(models, anchor, mask, source,
                                                           TrainConfig(steps=args.train_steps)))
    config = SampleConfig(steps=args.sample_steps, refine_strength=args.refine)
    frames = stage("sampling", lambda: sample_video(models, lora, anchor[0], args.frames, config))
    stage("refining", lambda: sdedit(models, lora, frames, config))
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    print(f"whole method, {args.frames}x{args.height}x{args.width}, {args.train_steps} training steps, "
          f"{args.sample_steps} sampling steps: {sum(seconds.values()):.1f} s; peak GPU memory {peak:.2f} GiB")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device {device} ({name}), model {models.name}, torch {torch.__version__}, {datetime.date.today().isoformat()}")


if __name__ == "__main__":
    main()
