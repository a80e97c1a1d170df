"""Writes web/docs/stage1.png from the newest `make demo` outputs: source, anchor and mask frames."""

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


def main() -> None:
    source = DEV_HOME / "base" / "input" / "recapture_sample.mp4"
    tiles = [("source, last frame", last_frame(source, -1)),
             ("anchor after a 15 degree orbit", last_frame(newest("anchor_*.mp4"), -1)),
             ("validity mask", last_frame(newest("mask_*.mp4"), -1))]
    w, h = 512, 288
    sheet = Image.new("RGB", (3 * w + 40, h + 36), (24, 24, 28))
    draw = ImageDraw.Draw(sheet)
    for i, (label, frame) in enumerate(tiles):
        x = 10 + i * (w + 10)
        sheet.paste(Image.fromarray(frame).resize((w, h), Image.LANCZOS), (x, 30))
        draw.text((x, 8), label, fill=(230, 230, 230))
    out = REPO / "web" / "docs" / "stage1.png"  # also the help pages' picture
    sheet.save(out, optimize=True)
    print(out)


if __name__ == "__main__":
    main()
