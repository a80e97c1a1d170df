"""Writes the help pages' pictures into web/docs/.

- stage1.png: source, anchor and mask frames from the newest `make demo` outputs;
- depth.png: a frame of the bundled sample and its depth (what Estimate Depth hands on);
- loss_curve.png: the Train node's loss curve from a short CPU training of the tiny test model on
  the sample's anchor (real code, tiny random model: the shape of the plot, not SVD's numbers).
"""

from __future__ import annotations

import sys
from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageDraw

from comfy_harness import DEV_HOME, REPO


def last_frame(path: Path, index: int) -> np.ndarray:
    with av.open(str(path)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(c.streams.video[0])]
    return frames[index]


def newest(pattern: str) -> Path:
    files = sorted((DEV_HOME / "base" / "output" / "recapture").glob(pattern), key=lambda p: p.stat().st_mtime)
    if not files:
        sys.exit("run `make demo` first")
    return files[-1]


def tile_sheet(tiles: list[tuple[str, np.ndarray]], w: int = 512, h: int = 288) -> Image.Image:
    sheet = Image.new("RGB", (len(tiles) * (w + 10) + 10, h + 36), (24, 24, 28))
    draw = ImageDraw.Draw(sheet)
    for i, (label, frame) in enumerate(tiles):
        x = 10 + i * (w + 10)
        sheet.paste(Image.fromarray(frame).resize((w, h), Image.LANCZOS), (x, 30))
        draw.text((x, 8), label, fill=(230, 230, 230))
    return sheet


def depth_picture(out: Path) -> None:
    import tempfile

    from recapture.demo_clip import DEPTH_FOLDER, VIDEO_NAME, write_demo_clip

    with tempfile.TemporaryDirectory() as tmp:
        write_demo_clip(Path(tmp))
        frame = last_frame(Path(tmp) / VIDEO_NAME, 0)
        depth = np.array(Image.open(sorted((Path(tmp) / DEPTH_FOLDER).glob("*.png"))[0])).astype(np.float32)
    depth = (255 * (depth - depth.min()) / max(np.ptp(depth), 1.0)).astype(np.uint8)
    tile_sheet([("frame", frame), ("its depth (near = bright)", np.stack([depth] * 3, -1))]).save(out, optimize=True)


def loss_curve_picture(out: Path) -> None:
    import torch

    from recapture.svd import build_tiny_svd
    from recapture.config import TrainConfig
    from recapture.loss_plot import loss_curve_image
    from recapture.train import train_recapture_lora

    t = torch.linspace(0, 1, 8)[:, None, None, None]
    y, x = torch.meshgrid(torch.linspace(0, 1, 64), torch.linspace(0, 1, 64), indexing="ij")
    clip = torch.stack([(torch.sin(6 * x + 3 * t[:, 0]) + 1) / 2, (torch.cos(5 * y - 3 * t[:, 0]) + 1) / 2,
                        0.5 + 0 * x.expand(8, -1, -1)], dim=-1)
    mask = torch.ones(8, 64, 64)
    mask[:, :, 40:] = 0
    lora = train_recapture_lora(build_tiny_svd(), clip, mask, clip,
                                TrainConfig(steps=120, rank=8, learning_rate=5e-3, spatial_frames=2))
    image = (loss_curve_image(lora.losses).numpy() * 255).astype(np.uint8)
    Image.fromarray(image).save(out, optimize=True)


def main() -> None:
    docs = REPO / "web" / "docs"
    depth_picture(docs / "depth.png")
    loss_curve_picture(docs / "loss_curve.png")
    print(docs / "depth.png", docs / "loss_curve.png")
    source = DEV_HOME / "base" / "input" / "recapture_sample.mp4"
    tiles = [("source, last frame", last_frame(source, -1)),
             ("anchor after a 15 degree orbit", last_frame(newest("anchor_*.mp4"), -1)),
             ("validity mask", last_frame(newest("mask_*.mp4"), -1))]
    out = docs / "stage1.png"  # also the README's picture
    tile_sheet(tiles).save(out, optimize=True)
    print(out)


if __name__ == "__main__":
    main()
