"""Reading and writing clips: frame selection against a full decode, resizing, errors."""

from __future__ import annotations

import av
import numpy as np
import pytest
import torch
from PIL import Image

import recapture.video
from recapture.video import (ALL_FRAMES, ClipSelection, VideoError, clip_length, fit_frames, read_clip,
                             read_frame_folder, read_video, select_frames, write_video)


def decode_all(path) -> np.ndarray:
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(c.streams.video[0])])


def test_selected_frames_equal_a_full_decode(real_video):
    reference = decode_all(real_video)
    frames, fps = read_video(real_video, ClipSelection(start=10, count=5, step=3))
    assert frames.shape == (5, 720, 1280, 3) and frames.dtype == torch.float32
    expected = reference[[10, 13, 16, 19, 22]].astype(np.float32) / 255.0
    np.testing.assert_array_equal(frames.numpy(), expected)
    assert fps == pytest.approx(25.0)


def test_decoding_stops_after_the_last_frame_it_needs(real_video):
    decoded = []
    read_video(real_video, ClipSelection(start=2, count=3, step=2), on_frame=lambda: decoded.append(1))
    assert len(decoded) == 7  # frames 0..6, not all 132


def test_video_shorter_than_asked_names_the_fix(real_video):
    with pytest.raises(VideoError, match=r"has 132 frames.*need frame 139.*lower the frame count"):
        read_video(real_video, ClipSelection(start=100, count=14, step=3))


def test_all_frames_reads_to_the_end_of_the_clip(real_video, tmp_path, monkeypatch):
    """Frame count 0 (all): every selected frame to the clip's end, from a video, a folder and memory;
    a start past the end and a clip longer than the largest frame count are named."""
    reference = decode_all(real_video)
    frames, _ = read_video(real_video, ClipSelection(start=100, count=ALL_FRAMES, step=7))
    np.testing.assert_array_equal(frames.numpy(), reference[100::7].astype(np.float32) / 255.0)  # 100..128: 5
    assert clip_length(real_video) == 132 and len(frames) == 5
    for i in range(5):
        Image.fromarray(np.full((4, 6, 3), 40 * i, dtype=np.uint8)).save(tmp_path / f"{i}.png")
    folder, _ = read_frame_folder(tmp_path, ClipSelection(start=1, count=ALL_FRAMES, step=2))
    assert clip_length(tmp_path) == 5 and folder[:, 0, 0, 0].mul(255).round().tolist() == [40, 120]  # frames 1, 3
    assert select_frames(torch.arange(5.0).view(5, 1, 1, 1), ClipSelection(count=ALL_FRAMES)).flatten().tolist() \
        == [0, 1, 2, 3, 4]
    with pytest.raises(VideoError, match=r"has 132 frames, so start frame 140 is past its end: lower the start"):
        read_video(real_video, ClipSelection(start=140, count=ALL_FRAMES))
    with pytest.raises(VideoError, match="has 5 frames, so start frame 5 is past its end"):
        read_frame_folder(tmp_path, ClipSelection(start=5, count=ALL_FRAMES))
    monkeypatch.setattr(recapture.video, "MAX_FRAMES", 20)  # stands for 10000: refused before memory fills
    decoded = []
    with pytest.raises(VideoError, match=r"more than 20 at once; give a frame count, a later start"):
        read_video(real_video, ClipSelection(count=ALL_FRAMES), on_frame=lambda: decoded.append(1))
    assert len(decoded) == 21
    with pytest.raises(VideoError, match="more than 20 at once"):
        select_frames(torch.zeros(30, 1, 1, 3), ClipSelection(count=ALL_FRAMES))


@pytest.mark.parametrize("content, message", [
    (None, "does not exist"),
    (b"", "is empty"),
    (b"\x00garbage" * 100, "cannot read .* as a video"),
])
def test_unreadable_files_say_why(tmp_path, content, message):
    path = tmp_path / "clip.mp4"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(VideoError, match=message):
        read_clip(path, ClipSelection())


def test_truncated_video_is_reported(real_video, tmp_path):
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(real_video.read_bytes()[: 200_000])
    with pytest.raises(VideoError):
        read_video(cut, ClipSelection(count=132))


def test_frame_folder_natural_order_and_16_bit_precision(tmp_path):
    folder = tmp_path / "depth"
    folder.mkdir()
    values = [100, 30000, 65535]
    for i, v in zip([2, 10, 1], values):  # natural order: 1, 2, 10
        Image.fromarray(np.full((4, 6), v, dtype=np.uint16)).save(folder / f"frame_{i}.png")
    frames, fps = read_frame_folder(folder, ClipSelection(count=3))
    assert fps is None and frames.shape == (3, 4, 6, 3)
    np.testing.assert_allclose(frames[:, 0, 0, 0].numpy(), [65535 / 65535, 100 / 65535, 30000 / 65535], rtol=1e-6)


def test_empty_frame_folder_says_what_to_put_there(tmp_path):
    with pytest.raises(VideoError, match="holds no image frames"):
        read_clip(tmp_path, ClipSelection())


def test_fit_frames_modes():
    frames = torch.rand(2, 90, 160, 3)
    assert fit_frames(frames, 64, 64, "crop").shape == (2, 64, 64, 3)
    assert fit_frames(frames, 128, 128, "stretch").shape == (2, 128, 128, 3)
    padded = fit_frames(torch.ones(1, 90, 160, 3), 128, 128, "pad")
    assert padded.shape == (1, 128, 128, 3)
    assert padded[0, 0].abs().sum() == 0 and padded[0, 64].min() > 0.99  # black bars top, image in the middle
    # crop keeps the centre: a vertical stripe in the middle survives
    stripe = torch.zeros(1, 64, 256, 3)
    stripe[:, :, 126:130] = 1
    cropped = fit_frames(stripe, 64, 64, "crop")
    assert cropped[0, :, 30:34].mean() > 0.9 and cropped[0, :, :20].max() == 0
    with pytest.raises(VideoError, match="crop, pad, stretch"):
        fit_frames(frames, 64, 64, "zoom")


def test_write_video_round_trip(tmp_path):
    frames = torch.linspace(0, 1, 6)[:, None, None, None].expand(6, 64, 96, 3).contiguous()
    out = write_video(tmp_path / "out.mp4", frames, fps=12.5)
    with av.open(str(out)) as c:
        s = c.streams.video[0]
        decoded = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(s)])
        assert float(s.average_rate) == pytest.approx(12.5)
    assert decoded.shape == (6, 64, 96, 3)
    np.testing.assert_allclose(decoded.mean(axis=(1, 2, 3)) / 255, frames.mean(dim=(1, 2, 3)).numpy(), atol=0.02)
    assert [p.name for p in tmp_path.iterdir()] == ["out.mp4"]  # no temporary file left


def test_failed_write_leaves_no_file(tmp_path):
    with pytest.raises(VideoError, match="even width and height"):
        write_video(tmp_path / "odd.mp4", torch.zeros(2, 63, 64, 3), fps=24)
    assert list(tmp_path.iterdir()) == []
