"""Refactoring guard: the whole method on tiny models gives the same bits as the recorded run.

The command line runs the method end to end on the bundled synthetic clip and a tiny random SVD
(anchor, mask, both LoRAs, sampled and refined video), once with the defaults and once with
``--low-memory``; the library's own sampler and SDEdit run on the LoRA it trained. Every output is
hashed bit for bit and compared with ``tests/golden/tiny_method.json``. A change that is meant to
alter results records new hashes (``RECAPTURE_WRITE_GOLDEN=1 pytest tests/test_no_behaviour_change.py``)
and says why in its commit; any other difference is a regression. The hashes hold for the pinned torch
on an x86-64 CPU (``constraints-dev.txt``): another torch or CPU may round differently.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

GOLDEN = Path(__file__).parent / "golden" / "tiny_method.json"
WRITE = os.environ.get("RECAPTURE_WRITE_GOLDEN") == "1"


def digest(value) -> str:
    array = value.detach().cpu().contiguous().numpy() if torch.is_tensor(value) else np.ascontiguousarray(value)
    return f"{array.dtype}{list(array.shape)}:" + hashlib.sha256(array.tobytes()).hexdigest()[:32]


def video_digest(path: Path) -> str:
    import av

    with av.open(str(path)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(container.streams.video[0])]
    return digest(np.stack(frames))


def lora_digests(path: Path) -> dict[str, str]:
    from safetensors.torch import load_file

    state = load_file(str(path))
    return {key: digest(state[key]) for key in sorted(state)}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    from conftest import save_tiny_svd_folder
    from recapture import demo_clip

    folder = tmp_path_factory.mktemp("golden")
    demo_clip.write_demo_clip(folder / "clip", num_frames=4, width=128, height=64)
    return folder / "clip", save_tiny_svd_folder(folder / "tiny-svd")


def run_method(clip: Path, svd: Path, out: Path, *extra: str) -> dict[str, object]:
    """The CLI's ``run``; the re-filmed video is hashed as the frames handed to the video writer (libx264's
    encodes of the same frames were seen to differ between runs in one process)."""
    from unittest import mock

    import recapture.video
    from recapture.cli import main

    written = {}
    write = recapture.video.write_video

    def recording(path, frames, fps, *args, **kwargs):
        written[Path(path).name] = digest(frames)
        return write(path, frames, fps, *args, **kwargs)

    with mock.patch.object(recapture.video, "write_video", recording):
        code = main(["run", "--video", str(clip / "recapture_sample.mp4"), "--depth",
                     str(clip / "recapture_sample_depth"), "--depth-kind", "inverse", "--near", "2.4", "--far", "6",
                     "--camera", "orbit_left", "--amount", "10", "--frames", "4", "--size", "64x64", "--svd", str(svd),
                     "--steps", "3", "--rank", "4", "--sample-steps", "3", "--refine", "0.5", "--device", "cpu", "--out", str(out), *extra])
    assert code == 0 and video_digest(out / "recaptured.mp4").startswith("uint8[4, 64, 64, 3]")
    stage1 = np.load(out / "anchor.npz")
    return {"anchor": digest(stage1["anchor"]), "mask": digest(stage1["mask"]),
            "temporal_lora": lora_digests(out / "recapture_temporal.safetensors"),
            "spatial_lora": lora_digests(out / "recapture_spatial.safetensors"),
            "recaptured": written["recaptured.mp4"]}


def library_samples(svd: Path, run: Path) -> dict[str, str]:
    """The sampler and SDEdit called as a library, with the trained pair and non-default settings."""
    from recapture.lora import load_lora_pair
    from recapture.sampling import SampleConfig, sample_video, sdedit
    from recapture.svd import load_svd

    models = load_svd(svd, torch.float32, "cpu")
    lora = load_lora_pair(run / "recapture_temporal.safetensors", run / "recapture_spatial.safetensors")
    anchor = torch.from_numpy(np.load(run / "anchor.npz")["anchor"])
    config = SampleConfig(steps=3, min_guidance=1.5, max_guidance=2.5, seed=7, temporal_strength=0.8,
                          spatial_strength=1.2)
    sampled = sample_video(models, lora, anchor[0], len(anchor), config)
    low = sample_video(models, lora, anchor[0], len(anchor), SampleConfig(steps=3, seed=7, memory="low",
                                                                          decode_chunk_size=2))
    refined = sdedit(models, lora, sampled, SampleConfig(steps=4, seed=3, refine_strength=0.6))
    return {"sampled": digest(sampled), "sampled_low_memory": digest(low), "refined": digest(refined)}


def test_tiny_method_gives_the_recorded_bits(inputs, tmp_path):
    clip, svd = inputs
    results = {"default": run_method(clip, svd, tmp_path / "default"),
               "low_memory": run_method(clip, svd, tmp_path / "low", "--low-memory")}
    results["library"] = library_samples(svd, tmp_path / "default")
    if WRITE:
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
        pytest.skip(f"recorded {GOLDEN}")
    expected = json.loads(GOLDEN.read_text())
    for run, outputs in expected.items():
        for name, value in outputs.items():
            assert results[run][name] == value, f"{run}: {name} differs from the recorded run"
