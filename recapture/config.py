"""Every setting of the method in one place: its default, its range and one line of help.

The nodes' inputs (``nodes/``) and the command line's options (``recapture/cli.py``) are built from
these fields, so a default or a range is written once, here. Defaults follow the paper where it
gives them (rank 16, learning rate 5e-4, 400 steps) and SVD's own pipeline otherwise.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field, fields

VAE_CHUNK = 8  # frames the VAE encodes or decodes at once by default


@dataclass(frozen=True)
class Setting:
    """What a front end needs to offer one config field: its default, its range and a line of help."""

    default: object
    help: str
    min: float | None = None
    max: float | None = None
    step: float | None = None
    choices: tuple[str, ...] | None = None


def setting(default, help: str, *, min=None, max=None, step=None, choices=None):
    """A dataclass field that carries its ``Setting`` (read back with ``setting_of``)."""
    return field(default=default, metadata={"setting": Setting(default, help, min, max, step, choices)})


def setting_of(config: type, name: str) -> Setting:
    """The ``Setting`` of field ``name`` of a config class."""
    for f in fields(config):
        if f.name == name and "setting" in f.metadata:
            return f.metadata["setting"]
    raise KeyError(f"{config.__name__} has no setting {name!r}")


def check_number(name: str, value, low: float | None, high: float | None, whole: bool = False,
                 error: type[ValueError] = ValueError):
    """Returns ``value`` if it is a finite number within ``low..high`` (a whole one if ``whole``), else raises
    ``error`` naming it. NaN passes every ``<``/``>`` comparison, so a plain range check lets it through;
    this one does not.

    >>> check_number("near", float("nan"), 0.001, 10000.0)
    Traceback (most recent call last):
    ...
    ValueError: near must be a finite number between 0.001 and 10000, got nan
    >>> check_number("rank", 1000, 1, 256, whole=True)
    Traceback (most recent call last):
    ...
    ValueError: rank must be between 1 and 256, got 1000
    """
    def shown(x: float) -> str:  # 1000000, not 1e+06
        return str(int(x)) if float(x).is_integer() else f"{x:g}"

    bounds = (f" between {shown(low)} and {shown(high)}" if low is not None and high is not None
              else f" at least {shown(low)}" if low is not None else f" at most {shown(high)}" if high is not None
              else "")
    if not (isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
            and (not whole or value == int(value))):
        raise error(f"{name} must be {'a whole number' if whole else 'a finite number'}{bounds}, got {value!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        raise error(f"{name} must be{bounds}, got {value!r}")
    return value


def check_setting(config: type, name: str, value, label: str | None = None, error: type[ValueError] = ValueError):
    """Returns ``value`` if the ``Setting`` of field ``name`` of ``config`` allows it (one of its choices, or a
    finite number in its range), else raises ``error`` naming it (as ``label``, default ``name``)."""
    s = setting_of(config, name)
    label = label or name
    if s.choices is not None:
        if value not in s.choices:
            raise error(f"{label} must be one of {', '.join(s.choices)}, got {value!r}")
        return value
    if s.min is None and s.max is None:
        return value
    return check_number(label, value, s.min, s.max, whole=isinstance(s.default, int), error=error)


def check_settings(config) -> None:
    """Checks every field of a config instance that has a ``Setting`` (``check_setting``); a custom
    ``MemoryPlan`` and None (not set: a default applies) pass as they are. The library's entry points call
    it, so the command line and scripts get the same checks as the nodes."""
    for f in fields(config):
        value = getattr(config, f.name)
        if "setting" in f.metadata and value is not None and not isinstance(value, MemoryPlan):
            check_setting(type(config), f.name, value)


# --- Stage 1 ------------------------------------------------------------------------------------------
FIT_MODES = ("crop", "pad", "stretch")  # how frames are brought to another size


@dataclass
class ClipConfig:
    """Which source frames to take and at what size (``recapture.video``)."""

    start_frame: int = setting(0, "First source frame to take (0 = the first frame).", min=0, max=1_000_000)
    frame_count: int = setting(14, "How many frames to take; 0 = all, to the end of the clip. Clips longer than "
                               "SVD's window (14 for svd, 25 for svd_xt) are trained and sampled in overlapping "
                               "windows.", min=0, max=10_000)
    every_nth: int = setting(1, "Take every n-th frame (2 halves the frame rate and doubles the time covered).",
                             min=1, max=1000)
    width: int = setting(1024, "Output width in pixels, a multiple of 64 as SVD needs.", min=64, max=4096, step=64)
    height: int = setting(576, "Output height in pixels, a multiple of 64 as SVD needs.", min=64, max=4096, step=64)
    resize: str = setting("crop", "crop: fill the size and cut the overflow at the centre; pad: fit inside with "
                          "black bars; stretch: change the aspect ratio.", choices=FIT_MODES)
    max_megapixels: float = setting(40.0, "Largest source frame read, in megapixels (8K video is 33): a file "
                                    "declaring more is refused before decoding (a decompression bomb: a few KB "
                                    "that would fill the memory).", min=1.0, max=1000.0, step=1.0)

# What a depth map holds: relative inverse depth (bright = near), relative depth, z-depth in scene units.
DEPTH_KINDS = ("inverse", "relative", "metric")


@dataclass
class PointCloudConfig:
    """Frames and their depth -> per-frame point clouds (``recapture.pointcloud.make_point_cloud``)."""

    depth_kind: str = setting("inverse", "inverse = relative inverse depth, bright = near (Depth Anything, MiDaS, most "
                              "depth models); relative = bright = far; metric = z-depth in metres.", choices=DEPTH_KINDS)
    near: float = setting(1.0, "Distance of the nearest point for relative depth (scene units).", min=0.001,
                          max=10_000.0, step=0.1)
    far: float = setting(10.0, "Distance of the farthest point for relative depth (scene units).", min=0.002,
                         max=100_000.0, step=0.1)
    fov_deg: float = setting(60.0, "Horizontal field of view of the source camera in degrees (phones ~65-75, 35 mm "
                             "lens on full frame ~54).", min=1.0, max=179.0, step=0.5)
    edge_threshold: float = setting(0.04, "Drop points on depth discontinuities whose relative depth jump exceeds this "
                                    "(removes stretched 'rubber sheet' edges). 0 keeps every point.", min=0.0,
                                    max=1.0, step=0.005)
    align_depth: bool = setting(False, "Steady depth: remove the scale and shift that per-frame depth models (Depth "
                                "Anything...) let drift from frame to frame, so the anchor does not breathe. Turn "
                                "it on for per-frame relative depth; metric depth is used as it is.")


# Camera moves (their directions: recapture.camera's docstring).
PRESETS = (
    "static",
    "orbit_left", "orbit_right", "orbit_up", "orbit_down",
    "pan_left", "pan_right", "tilt_up", "tilt_down", "roll_left", "roll_right",
    "truck_left", "truck_right", "pedestal_up", "pedestal_down", "dolly_in", "dolly_out",
    "zoom_in", "zoom_out",
)
EASINGS = ("linear", "ease_in", "ease_out", "ease_in_out")

# How much a camera path may hold (a camera file, custom_path, a request to the editor's route): refused
# above these before most of the parsing, so a huge path cannot hold up the server or ignore Cancel.
MAX_PATH_CAMERAS = 10_000  # cameras; also the frame count's maximum, so a path baked at any frame count fits
MAX_PATH_BYTES = 8 * 2**20  # MAX_PATH_CAMERAS cameras at full precision, pretty-printed, are about 4 MB
MAX_PATH_REQUEST_BYTES = 2 * MAX_PATH_BYTES  # a route request carrying such a custom_path, its quotes escaped
PATH_CANCEL_EVERY = 500  # cameras read between two checks for Cancel


@dataclass
class CameraConfig:
    """A camera move (``recapture.camera.choose_camera_path``)."""

    preset: str = setting("orbit_left", "orbit_*: circle the subject at the pivot distance; pan/tilt/roll: rotate in "
                          "place; truck/pedestal/dolly: move sideways/up-down/forward; zoom: change the focal length "
                          "only.", choices=PRESETS)
    amount: float = setting(20.0, "Degrees for orbit/pan/tilt/roll; percent of the subject distance for "
                            "truck/pedestal/dolly; percent focal-length change for zoom (50: x1.5 in, /1.5 out). "
                            "Negative reverses the move.", min=-3600.0, max=3600.0, step=1.0)
    easing: str = setting("ease_in_out", "How the move speeds up and slows down over the clip.", choices=EASINGS)
    frames: int = setting(14, "Number of frames; a connected point cloud sets it instead.", min=1,
                          max=MAX_PATH_CAMERAS)
    pivot_distance: float = setting(0.0, "Distance from the camera to the subject the orbit circles (scene units). "
                                    "0 = the depth at the image centre of the point cloud.", min=0.0,
                                    max=100_000.0, step=0.1)


@dataclass
class RenderConfig:
    """Rendering the anchor (``recapture.render.render_anchor``)."""

    dilate_holes: int = setting(0, "Grow the holes by this many pixels (hides unreliable hole borders).", min=0,
                                max=64)
    depth_tolerance: float = 0.02  # points within this relative depth of the nearest one at a pixel are blended


# --- Memory -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MemoryPlan:
    """How a training or sampling run trades time for GPU memory. The results are the same under every
    plan, up to rounding (``tests/test_memory.py``); the figures are in ``docs/benchmarks.md``.

    Attributes:
        checkpointing: training recomputes each residual and transformer block in the backward pass.
        keep_outputs_from_flops: with checkpointing, outputs costing this many FLOPs per element or more
            to recompute are kept anyway (None: all recomputed).
        feed_forward_tokens: feed-forwards run over slices of this many tokens (checkpointed each in
            training); None: whole.
        offload_encoders: CLIP and the VAE wait on the CPU while the UNet works.
        encode_chunk: frames the VAE encodes at once when training.
        guidance_in_turn: sampling runs the two guidance branches one after the other.
        park_unet: sampling keeps the UNet on the CPU while the VAE works.
    """

    checkpointing: bool
    keep_outputs_from_flops: int | None
    feed_forward_tokens: int | None
    offload_encoders: bool
    encode_chunk: int
    guidance_in_turn: bool
    park_unet: bool


# "balanced" keeps attention over 2048+ keys and the widest products and convolutions: the cheapest
# point in memory per FLOP saved (docs/benchmarks.md, "kept outputs").
MEMORY_PLANS = {
    "fast": MemoryPlan(checkpointing=False, keep_outputs_from_flops=None, feed_forward_tokens=None,
                       offload_encoders=False, encode_chunk=VAE_CHUNK, guidance_in_turn=False, park_unet=False),
    "balanced": MemoryPlan(checkpointing=True, keep_outputs_from_flops=8192, feed_forward_tokens=None,
                           offload_encoders=True, encode_chunk=VAE_CHUNK, guidance_in_turn=False, park_unet=False),
    "low": MemoryPlan(checkpointing=True, keep_outputs_from_flops=None, feed_forward_tokens=16384,
                      offload_encoders=True, encode_chunk=2, guidance_in_turn=True, park_unet=True),
}


DEFAULT_MEMORY = "balanced"


def memory_from_switch(low_memory: bool) -> str:
    """The plan the front ends' one memory switch (``low_memory``, ``--low-memory``) picks."""
    return "low" if low_memory else DEFAULT_MEMORY


def memory_plan(memory: str | MemoryPlan) -> MemoryPlan:
    """A plan by name (``fast``, ``balanced``, ``low``), or a custom plan as it is (benchmarks)."""
    if isinstance(memory, MemoryPlan):
        return memory
    if memory not in MEMORY_PLANS:
        raise ValueError(f"unknown memory plan {memory!r}: use one of {', '.join(MEMORY_PLANS)}")
    return MEMORY_PLANS[memory]


# --- Stage 2 ------------------------------------------------------------------------------------------
@dataclass
class Conditioning:
    """SVD's micro-conditioning: the same values must be used to train and to sample, so a trained
    LoRA carries them (``TrainedLoRA.conditioning``)."""

    fps: int = setting(7, "SVD's fps conditioning (its id is fps - 1); sample with the training's.", min=1, max=60)
    motion_bucket_id: int = setting(127, "SVD's motion conditioning; sample with the training's.", min=0, max=1023)
    noise_aug_strength: float = setting(0.02, "Noise added to the image prompt, the same at training and sampling.",
                                        min=0.0, max=1.0, step=0.01)

    def time_ids(self) -> list[float]:
        """SVD's ``added_time_ids``: fps - 1, motion bucket, noise augmentation."""
        return [self.fps - 1, self.motion_bucket_id, self.noise_aug_strength]

    def conditioning(self) -> Conditioning:
        return Conditioning(self.fps, self.motion_bucket_id, self.noise_aug_strength)


# A sampling node's fps / motion_bucket_id / noise_aug_strength value meaning "what the LoRA was trained
# with" (one below each range); the command line leaves the option out for that.
FROM_LORA = {"fps": 0, "motion_bucket_id": -1, "noise_aug_strength": -1.0}


def conditioning_for(trained: Conditioning, **given) -> Conditioning:
    """SVD's conditioning to sample with: each ``given`` value (fps, motion_bucket_id, noise_aug_strength),
    except None or its ``FROM_LORA`` value, which take the ``trained`` one (``TrainedLoRA.conditioning``)."""
    values = {f.name: getattr(trained, f.name) for f in fields(Conditioning)}
    values |= {name: value for name, value in given.items() if value is not None and value != FROM_LORA[name]}
    return Conditioning(**values)


@dataclass
class Windows:
    """How a clip longer than SVD's window is covered: overlapping windows (``recapture.windows``)."""

    window_overlap: int = setting(4, "Frames that neighbouring windows share when the clip is longer than SVD's "
                                  "window (14 frames for svd, 25 for svd_xt): they are blended, so the windows "
                                  "hand over without a seam. More overlap: smoother, more windows to compute (at most "
                                  "the window less one frame).",
                                  min=0, max=24)


@dataclass
class TrainConfig(Conditioning, Windows):
    """One ReCapture fine-tuning run: the temporal LoRA on the anchor, the spatial LoRA on the source."""

    steps: int = setting(400, "Training steps (paper: 400).", min=1, max=100_000)
    learning_rate: float = setting(5e-4, "AdamW learning rate (paper: 5e-4).", min=1e-6, max=0.1, step=1e-5)
    rank: int = setting(16, "LoRA rank (paper: 16).", min=1, max=256)
    alpha: float | None = None  # None: equal to the rank (scale 1)
    seed: int = setting(0, "Seed of the LoRA initialisation, noise and sigma draws.", min=0, max=2**31 - 1)
    conditioning_frame: int = setting(0, "Frame used as the image prompt (0 = first, as the sampler uses).",
                                      min=0, max=10_000)
    mask_erosion: int = setting(0, "Extra latent pixels (8 px each) ignored around holes.", min=0, max=8)
    p_mean: float = 0.7  # log-normal sigma sampling of SVD's fine-tuning
    p_std: float = 1.6
    conditioning_dropout: float = 0.1  # keeps classifier-free guidance working
    spatial_frames: int = 4  # source frames per spatial step
    spatial_augment: bool = setting(True, "Train the spatial LoRA on randomly cropped, scaled and mirrored source "
                                    "frames (the paper's augmentation), so it learns the scene's look and not the "
                                    "source camera's framing.")
    augmented_copies: int = 4  # reframed copies of each source frame, encoded once
    spatial_pool: int = 64  # source frames the spatial LoRA learns from, spread evenly over a longer clip
    conditioning_noise_draws: int = 16  # noise augmentations of the image prompt, encoded once, one picked per step
    memory: str | MemoryPlan = setting(
        DEFAULT_MEMORY, "For GPUs with 8-12 GB (the low memory plan): recomputes every block in the backward pass (the feed-forwards in "
        "slices) and encodes 2 frames at a time: 14 frames at 1024x576 need about 8 GB instead of 12. The same "
        "LoRAs, about a fifth more arithmetic per step.", choices=tuple(MEMORY_PLANS))


@dataclass
class SampleConfig(Conditioning, Windows):
    """Sampling with both LoRAs, and SDEdit refinement with the spatial LoRA."""

    steps: int = setting(25, "Sampling steps (svd 25, svd_xt 30).", min=1, max=500)
    seed: int = setting(0, "Noise seed.", min=0, max=2**31 - 1)
    min_guidance: float = setting(1.0, "Classifier-free guidance at the first frame; it rises linearly...",
                                  min=0.0, max=20.0, step=0.1)
    max_guidance: float = setting(3.0, "...to this at the last frame (svd_xt: 3.0, svd: 2.5).", min=0.0, max=20.0,
                                  step=0.1)
    temporal_strength: float = setting(1.0, "Strength of the temporal (camera motion) LoRA.", min=0.0, max=2.0,
                                       step=0.05)
    spatial_strength: float = setting(1.0, "Strength of the spatial (appearance) LoRA.", min=0.0, max=2.0, step=0.05)
    refine_strength: float = setting(0.6, "How much noise SDEdit adds before denoising: its share of the noised "
                                     "frames (0 = unchanged, 1 = pure noise), whatever the steps. 0.6 redraws fine "
                                     "detail and keeps the layout.", min=0.0, max=1.0, step=0.05)
    decode_chunk_size: int = setting(VAE_CHUNK, "Frames the VAE decodes (SDEdit: also encodes) at once; lower it if "
                                     "memory runs out (SVD's decoder mixes the frames of a chunk).", min=1, max=64)
    memory: str | MemoryPlan = setting(
        DEFAULT_MEMORY, "For GPUs with 8-12 GB (the low memory plan): the two guidance branches run one after the other, the "
        "feed-forwards over slices of the frames, and the UNet leaves the GPU while the VAE works (with "
        "decode_chunk_size 2, 25 frames at 1024x576 need about 5.5 GB instead of 12.5). The same frames, a "
        "little slower.", choices=tuple(MEMORY_PLANS))
