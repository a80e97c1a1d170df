"""Stage 2 nodes: load SVD, fine-tune the masked temporal and spatial LoRAs, load them, sample, refine.

Inputs that are settings of the method are built from ``recapture.config`` (default, range, tooltip)."""

from __future__ import annotations

import os
import re

import comfy.model_management
import folder_paths
import torch

from ..recapture.config import FROM_LORA, SampleConfig, TrainConfig, conditioning_for, memory_from_switch, setting_of
from ..recapture.lora import DEFAULT_NAME as DEFAULT_LORA_NAME
from ._api import (CATEGORY_SVD, REFRESH, InvalidInput, Progress, check_inputs, in_models, io, model_path,
                   releasing_memory, require_finite, search_aliases, setting_input, ui, video_player, writable_folder)

SVDType = io.Custom("RECAPTURE_SVD")
LoRAType = io.Custom("RECAPTURE_LORA")
LORA_SUBFOLDER = "recapture"
DTYPES = ("auto", "bf16", "fp16", "fp32")


_looks: dict[str, tuple[tuple, str | None]] = {}  # path -> (size, mtime), what it looks like (None: SVD)


def _not_svd(path: str) -> str | None:
    """None when a single-file checkpoint holds a complete SVD, else what it looks like ("an SDXL
    checkpoint", "a damaged file"...): read off its key names (the header alone), remembered until the
    file changes."""
    from ..recapture.svd import describe_checkpoint, is_svd_checkpoint, safetensors_keys

    try:
        stat = os.stat(path)
        version = (stat.st_size, stat.st_mtime_ns)
        if path in _looks and _looks[path][0] == version:
            return _looks[path][1]
        keys = safetensors_keys(path)
        looks = None if is_svd_checkpoint(keys) else describe_checkpoint(keys)
    except (OSError, ValueError):
        return "an unreadable or damaged file (download it again)"
    _looks[path] = (version, looks)
    return looks


def _svd_choices() -> list[str]:
    """Single-file checkpoints (``checkpoints/...``) that hold an SVD, going by their key names (SD 1.5,
    SDXL... in the same folder are left out), and diffusers SVD folders (``diffusers/...``)."""
    from ..recapture.svd import is_diffusers_svd_folder

    files = [f"checkpoints/{f}" for f in folder_paths.get_filename_list("checkpoints")
             if f.endswith(".safetensors") and in_models("checkpoints", f)  # no link leading out
             and _not_svd(model_path("checkpoints", f)) is None]
    folders = set()
    for root in folder_paths.get_folder_paths("diffusers"):
        if os.path.isdir(root):
            folders.update(n for n in os.listdir(root)
                           if in_models("diffusers", n) and is_diffusers_svd_folder(os.path.join(root, n)))
    return files + [f"diffusers/{n}" for n in sorted(folders)]


def _svd_problem(model: str, choices: list[str]) -> str:
    """Why ``model`` (not in ``choices``) cannot be loaded, and what to do: one message."""
    fix = ("put svd_xt.safetensors (or svd.safetensors, or their _fp16 versions) in models/checkpoints/ or a "
           f"diffusers-format SVD folder in models/diffusers/, then {REFRESH} and pick it in model")
    kind, _, name = model.partition("/")
    looks = _not_svd(model_path(kind, name)) if kind == "checkpoints" and in_models(kind, name) else None
    if looks:
        found = f" or pick one of the SVD models found ({', '.join(choices)})" if choices else ""
        return f"model {model!r} is not a Stable Video Diffusion checkpoint: it looks like {looks}. Stage 2 " \
               f"needs SVD: {fix}{found}"
    if choices:
        shown = ", ".join(choices) if len(choices) <= 12 else f"{len(choices)} choices"
        return f"model {model!r} is not one of its choices ({shown}): pick one from the list, or {fix}"
    return (f"model {model!r} is not one of its choices: no Stable Video Diffusion model was found, and Stage 2 "
            f"needs one. To run it, {fix}. Nodes that do not need SVD (the anchor and mask) run without it")


def _svd_path(choice: str) -> str:
    """``checkpoints/<file>`` or ``diffusers/<folder>`` -> its path inside that model folder."""
    kind, _, name = choice.partition("/")
    if kind not in ("checkpoints", "diffusers"):
        raise ValueError(f"unknown SVD model {choice!r}: pick checkpoints/... or diffusers/... from the list")
    return model_path(kind, name)


def _dtype(choice: str, device: torch.device) -> torch.dtype:
    if choice == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float16 if device.type == "mps" else torch.float32
    dtypes = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
    if choice not in dtypes:
        raise ValueError(f"dtype {choice!r} is not one of {', '.join(DTYPES)}: pick one from the list")
    return dtypes[choice]


@search_aliases("stable video diffusion", "svd checkpoint", "load model")
class ReCaptureLoadSVD(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ReCaptureLoadSVD",
            display_name="ReCapture Load SVD",
            category=CATEGORY_SVD,
            description="Loads Stable Video Diffusion (svd or svd_xt): the single-file checkpoint from "
                        "models/checkpoints/ or a diffusers-format folder from models/diffusers/, offline and "
                        "safetensors only, onto ComfyUI's device.",
            inputs=[
                io.Combo.Input("model", options=_svd_choices(),
                               tooltip="checkpoints/svd_xt.safetensors (or svd, fp16 variants) as ComfyUI users "
                                       "have them, or diffusers/<folder> (model_index.json, unet/, vae/...). 25 "
                                       "frames for names with 'xt', else 14."),
                io.Combo.Input("dtype", options=list(DTYPES), default="auto",
                               tooltip="Precision of the frozen model: auto = bf16/fp16 on GPUs, fp32 on CPU. "
                                       "LoRA weights always train in fp32."),
            ],
            outputs=[SVDType.Output("svd", display_name="svd", tooltip="The SVD model for ReCapture's Stage 2.")],
        )

    @classmethod
    def validate_inputs(cls, model: str, dtype: str) -> bool:
        # A missing or wrong model is refused here, before anything runs: ComfyUI then drops only the
        # outputs that need SVD and still runs the others (the anchor and mask are saved without SVD).
        check_inputs(cls, {"dtype": dtype})
        choices = _svd_choices()
        if model is None or model in choices:
            return True
        raise InvalidInput(f"ReCapture Load SVD: {_svd_problem(model, choices)}")

    @classmethod
    def execute(cls, model: str, dtype: str) -> io.NodeOutput:
        from ..recapture.svd import load_svd

        comfy.model_management.unload_all_models()
        comfy.model_management.soft_empty_cache()
        device = comfy.model_management.get_torch_device()
        # Weights made under ComfyUI's inference mode could never take part in LoRA training.
        with torch.inference_mode(False):
            return io.NodeOutput(load_svd(_svd_path(model), _dtype(dtype, device), device))


def _lora_dir() -> str:
    """models/loras/recapture/; refused when it is a symlink that leads outside models/loras/."""
    return writable_folder(folder_paths.get_folder_paths("loras")[0], LORA_SUBFOLDER, "models/loras")


def _check_lora_name(name: str) -> None:
    """Refuses, before any training, a lora_name that is not a plain file stem, or a LoRA folder that is a
    link leading out. The free number (never overwrite) is found when the pair is saved (``save_lora_pair``):
    a name free now may be taken by the time training ends."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,100}", name) or ".." in name:
        raise ValueError(f"lora_name {name!r} may only use letters, digits, '_', '-' and '.' (no folders): it "
                         "becomes models/loras/recapture/<lora_name>_temporal.safetensors")
    _lora_dir()


@search_aliases("lora training", "fine-tune", "re-film")
class ReCaptureTrainMaskedLoRA(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ReCaptureTrainMaskedLoRA",
            display_name="ReCapture Train Masked LoRA",
            category=CATEGORY_SVD,
            description=(
                "Fine-tunes SVD on this one video: a temporal LoRA learns the anchor's camera motion (loss only "
                "where the anchor is valid) and a spatial LoRA learns the source's appearance (temporal layers "
                "off). Writes both to models/loras/recapture/ in core ComfyUI's LoRA format."),
            inputs=[
                SVDType.Input("svd", tooltip="From ReCapture Load SVD."),
                io.Image.Input("anchor", tooltip="The anchor video from ReCapture Render Anchor."),
                io.Mask.Input("mask", tooltip="Its validity mask (1 = valid), from ReCapture Render Anchor."),
                io.Image.Input("source", tooltip="The source frames, at the anchor's size."),
                setting_input(TrainConfig, "steps"),
                io.Int.Input("frames", default=0, min=0, max=10_000,
                             tooltip="Train on the first N frames of the anchor and source (0 = all of them)."),
                setting_input(TrainConfig, "learning_rate"),
                setting_input(TrainConfig, "rank"),
                setting_input(TrainConfig, "seed", control_after_generate=True),
                setting_input(TrainConfig, "conditioning_frame"),
                setting_input(TrainConfig, "fps"),
                setting_input(TrainConfig, "motion_bucket_id"),
                setting_input(TrainConfig, "noise_aug_strength"),
                setting_input(TrainConfig, "mask_erosion"),
                io.String.Input("lora_name", default=DEFAULT_LORA_NAME,
                                tooltip="File stem: models/loras/recapture/<name>_temporal / _spatial.safetensors "
                                        "(a number is added instead of overwriting)."),
                _low_memory_input(TrainConfig),
                setting_input(TrainConfig, "spatial_augment", optional=True),
                setting_input(TrainConfig, "window_overlap", optional=True),
            ],
            outputs=[
                LoRAType.Output("lora", display_name="lora", tooltip="Both trained LoRAs, for the sampler."),
                io.Image.Output("loss_curve", display_name="loss_curve", tooltip="Temporal and spatial loss over steps."),
            ],
        )

    @classmethod
    def validate_inputs(cls, learning_rate: float, noise_aug_strength: float) -> bool | str:
        return check_inputs(cls, locals())

    @classmethod
    def execute(cls, svd, anchor, mask, source, steps, frames, learning_rate, rank, seed, conditioning_frame, fps,
                motion_bucket_id, noise_aug_strength, mask_erosion, lora_name, low_memory=False,
                spatial_augment=TrainConfig.spatial_augment,
                window_overlap=TrainConfig.window_overlap) -> io.NodeOutput:
        from PIL import Image

        from ..recapture.lora import save_lora_pair
        from ..recapture.loss_plot import loss_curve_image, loss_status
        from ..recapture.train import train_recapture_lora

        for name, value, maker in (("anchor", anchor, "Render Anchor"), ("mask", mask, "Render Anchor"),
                                   ("source", source, "Load Video")):
            require_finite(name, value, f"connect the {name} straight from ReCapture {maker}")
        _check_lora_name(lora_name)
        config = TrainConfig(rank=rank, learning_rate=learning_rate, steps=steps, seed=seed,
                             conditioning_frame=conditioning_frame, fps=fps, motion_bucket_id=motion_bucket_id,
                             noise_aug_strength=noise_aug_strength, mask_erosion=mask_erosion,
                             spatial_augment=spatial_augment, window_overlap=window_overlap,
                             memory=memory_from_switch(low_memory))
        progress = Progress(steps)
        losses: list[tuple[float, float]] = []

        def on_step(step: int, temporal: float, spatial: float) -> None:
            losses.append((temporal, spatial))
            live = step % 10 == 9 or step == steps - 1  # the loss curve, live in the node
            curve = Image.fromarray((loss_curve_image(losses).numpy() * 255).astype("uint8")) if live else None
            progress.advance(preview=curve, detail=loss_status(temporal, spatial))  # as the picture's legend

        count = frames or len(anchor)
        comfy.model_management.unload_all_models()
        comfy.model_management.soft_empty_cache()
        with torch.inference_mode(False), releasing_memory():  # training needs autograd
            mask = mask if mask.ndim == 3 else mask[None]
            lora = train_recapture_lora(svd, anchor[:count].clone(), mask[:count].clone(), source[:count].clone(),
                                        config, on_step=on_step)
        save_lora_pair(_lora_dir(), lora_name, lora, {"model": svd.name})
        curve = loss_curve_image(lora.losses)[None]
        return io.NodeOutput(lora, curve, ui=ui.PreviewImage(curve, cls=cls))


@search_aliases("recapture lora", "lora pair")
class ReCaptureLoadLoRA(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        files = [f for f in folder_paths.get_filename_list("loras") if f.endswith(".safetensors")]
        return io.Schema(
            node_id="ReCaptureLoadLoRA",
            display_name="ReCapture Load LoRA",
            category=CATEGORY_SVD,
            description="Loads a temporal + spatial LoRA pair saved by ReCapture Train Masked LoRA, so one training "
                        "serves many samplings and LoRAs can be shared.",
            inputs=[
                io.Combo.Input("temporal", options=[f for f in files if "temporal" in f] or files,
                               tooltip="The *_temporal.safetensors file."),
                io.Combo.Input("spatial", options=[f for f in files if "spatial" in f] or files,
                               tooltip="The *_spatial.safetensors file from the same training."),
            ],
            outputs=[LoRAType.Output("lora", display_name="lora", tooltip="Both LoRAs, for the sampler.")],
        )

    @classmethod
    def validate_inputs(cls, temporal: str, spatial: str) -> bool | str:
        return check_inputs(cls, locals())

    @classmethod
    def fingerprint_inputs(cls, temporal: str, spatial: str) -> str:
        return ";".join(str(os.path.getmtime(folder_paths.get_full_path_or_raise("loras", f))) for f in (temporal, spatial))

    @classmethod
    def execute(cls, temporal: str, spatial: str) -> io.NodeOutput:
        from ..recapture.lora import load_lora_pair

        return io.NodeOutput(load_lora_pair(folder_paths.get_full_path_or_raise("loras", temporal),
                                            folder_paths.get_full_path_or_raise("loras", spatial)))


PROMPT_FRAMES = ("first anchor frame", "first source frame")


def _from_lora_input(name: str, **options):
    """An input of SVD's conditioning (fps, motion bucket, noise augmentation) for sampling: by default
    (``FROM_LORA``) the value the LoRA was trained with; any other value overrides it."""
    value = FROM_LORA[name]
    return setting_input(SampleConfig, name, default=value, min=value, tooltip=f"{setting_of(SampleConfig, name).help} "
                         f"{value:g} = the LoRA's own (what it was trained with; SVD's default for other LoRAs).",
                         **options)


def _sample_config(lora, fps, motion_bucket_id, noise_aug_strength, low_memory, **values) -> SampleConfig:
    """The sampling settings of a node: SVD's conditioning the LoRA's unless an input overrides it."""
    conditioning = conditioning_for(lora.conditioning, fps=fps, motion_bucket_id=motion_bucket_id,
                                    noise_aug_strength=noise_aug_strength)
    return SampleConfig(**vars(conditioning), **values, memory=memory_from_switch(low_memory))


def _low_memory_input(config: type):
    """The low_memory switch of training, sampling and refining: the config's "low" memory plan."""
    from ..recapture.config import setting_of

    return io.Boolean.Input("low_memory", default=False, optional=True, tooltip=setting_of(config, "memory").help)


@search_aliases("re-film", "novel view video", "sampler", "fill holes")
class ReCaptureSVDDualLoRASample(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ReCaptureSVDDualLoRASample",
            display_name="ReCapture SVD Dual-LoRA Sample",
            category=CATEGORY_SVD,
            description=(
                "Samples the re-filmed video with both LoRAs on: the temporal LoRA keeps the anchor's camera "
                "motion, the spatial LoRA the source's look, and SVD fills the holes. Frames come out at the "
                "anchor's size and count."),
            inputs=[
                SVDType.Input("svd", tooltip="From ReCapture Load SVD."),
                LoRAType.Input("lora", tooltip="From ReCapture Train Masked LoRA or Load LoRA."),
                io.Image.Input("anchor", tooltip="The anchor video (sets the size and frame count)."),
                io.Combo.Input("image_prompt", options=list(PROMPT_FRAMES), default=PROMPT_FRAMES[0],
                               tooltip="The frame SVD starts from: the first anchor frame (the paper's choice) or "
                                       "the first source frame."),
                setting_input(SampleConfig, "steps"),
                setting_input(SampleConfig, "seed", control_after_generate=True),
                setting_input(SampleConfig, "min_guidance"),
                setting_input(SampleConfig, "max_guidance"),
                _from_lora_input("fps"),
                _from_lora_input("motion_bucket_id"),
                _from_lora_input("noise_aug_strength"),
                setting_input(SampleConfig, "temporal_strength"),
                setting_input(SampleConfig, "spatial_strength"),
                setting_input(SampleConfig, "decode_chunk_size"),
                _low_memory_input(SampleConfig),
                io.Image.Input("source", optional=True, tooltip="The source frames, for image_prompt = first source frame."),
                io.Mask.Input("mask", optional=True,
                              tooltip="The anchor's validity mask (from Render Anchor): the image prompt is black "
                                      "in its holes, as in training. Needed for anchors from other nodes that do "
                                      "not leave holes black; unconnected: all valid."),
                setting_input(SampleConfig, "window_overlap", optional=True),
            ],
            outputs=[io.Image.Output("frames", display_name="frames", tooltip="The sampled video frames.")],
        )

    @classmethod
    def validate_inputs(cls, image_prompt: str, min_guidance: float, max_guidance: float, fps: int,
                        motion_bucket_id: int, noise_aug_strength: float, temporal_strength: float,
                        spatial_strength: float) -> bool | str:
        return check_inputs(cls, locals())

    @classmethod
    def execute(cls, svd, lora, anchor, image_prompt, steps, seed, min_guidance, max_guidance, fps,
                motion_bucket_id, noise_aug_strength, temporal_strength, spatial_strength, decode_chunk_size,
                low_memory=False, source=None, mask=None, window_overlap=SampleConfig.window_overlap) -> io.NodeOutput:
        from ..recapture.sampling import sample_video, window_count

        if image_prompt == PROMPT_FRAMES[1] and source is None:
            raise ValueError("image_prompt is the first source frame but no source is connected: connect the source "
                             "frames or use the first anchor frame")
        require_finite("anchor", anchor, "connect the anchor straight from ReCapture Render Anchor")
        if source is not None:
            require_finite("source", source, "connect the source frames straight from ReCapture Load Video")
        if mask is not None:
            mask = mask if mask.ndim == 3 else mask[None]
            if mask.shape[1:] != anchor.shape[1:3]:
                raise ValueError(f"the mask is {mask.shape[2]}x{mask.shape[1]} but the anchor {anchor.shape[2]}x"
                                 f"{anchor.shape[1]}: connect the mask rendered with this anchor")
            require_finite("mask", mask, "connect the mask straight from ReCapture Render Anchor")
        if image_prompt == PROMPT_FRAMES[1]:  # each window starts from its source frame when there is one per frame
            prompt, mask = (source if len(source) == len(anchor) else source[0]), None
        else:
            prompt = anchor
        config = _sample_config(lora, fps, motion_bucket_id, noise_aug_strength, low_memory, steps=steps, seed=seed,
                                min_guidance=min_guidance, max_guidance=max_guidance,
                                temporal_strength=temporal_strength, spatial_strength=spatial_strength,
                                decode_chunk_size=decode_chunk_size, window_overlap=window_overlap)
        progress = Progress(steps, windows=window_count(svd, anchor.shape[0], config))
        with torch.inference_mode(False), releasing_memory():
            frames = sample_video(svd, lora, prompt.clone(), anchor.shape[0], config, lambda *_: progress.advance(),
                                  mask=mask)
        return io.NodeOutput(frames, ui=video_player(cls, frames))


@search_aliases("refine", "sharpen", "sdedit", "re-film")
class ReCaptureSDEditRefine(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ReCaptureSDEditRefine",
            display_name="ReCapture SDEdit Refine",
            category=CATEGORY_SVD,
            description="Sharpens sampled frames: noises them to the level of `strength` and denoises again with the "
                        "spatial LoRA only (SDEdit), with SVD's conditioning the LoRA was trained with unless set "
                        "here. Strength 0 returns the input (through the VAE).",
            inputs=[
                SVDType.Input("svd", tooltip="From ReCapture Load SVD."),
                LoRAType.Input("lora", tooltip="The LoRA pair; only its spatial LoRA is used."),
                io.Image.Input("frames", tooltip="Frames to refine (e.g. from the dual-LoRA sampler)."),
                setting_input(SampleConfig, "refine_strength", "strength"),
                setting_input(SampleConfig, "steps"),
                setting_input(SampleConfig, "seed", control_after_generate=True),
                setting_input(SampleConfig, "decode_chunk_size", optional=True),
                _low_memory_input(SampleConfig),
                setting_input(SampleConfig, "min_guidance", optional=True),
                setting_input(SampleConfig, "max_guidance", optional=True),
                _from_lora_input("fps", optional=True),
                _from_lora_input("motion_bucket_id", optional=True),
                _from_lora_input("noise_aug_strength", optional=True),
                setting_input(SampleConfig, "window_overlap", optional=True),
            ],
            outputs=[io.Image.Output("refined", display_name="refined", tooltip="The refined frames.")],
        )

    @classmethod
    def validate_inputs(cls, strength: float, min_guidance: float | None = None, max_guidance: float | None = None,
                        fps: int | None = None, motion_bucket_id: int | None = None,
                        noise_aug_strength: float | None = None) -> bool | str:
        return check_inputs(cls, locals())

    @classmethod
    def execute(cls, svd, lora, frames, strength, steps, seed, decode_chunk_size=SampleConfig.decode_chunk_size,
                low_memory=False, min_guidance=SampleConfig.min_guidance, max_guidance=SampleConfig.max_guidance,
                fps=FROM_LORA["fps"], motion_bucket_id=FROM_LORA["motion_bucket_id"],
                noise_aug_strength=FROM_LORA["noise_aug_strength"],
                window_overlap=SampleConfig.window_overlap) -> io.NodeOutput:
        from ..recapture.sampling import refine_steps, sdedit, window_count

        require_finite("frames", frames, "connect the frames straight from ReCapture SVD Dual-LoRA Sample")
        config = _sample_config(lora, fps, motion_bucket_id, noise_aug_strength, low_memory, steps=steps, seed=seed,
                                refine_strength=strength, decode_chunk_size=decode_chunk_size,
                                min_guidance=min_guidance, max_guidance=max_guidance, window_overlap=window_overlap)
        progress = Progress(max(1, refine_steps(svd, config)), windows=window_count(svd, len(frames), config))
        with torch.inference_mode(False), releasing_memory():
            refined = sdedit(svd, lora, frames.clone(), config, lambda *_: progress.advance())
        return io.NodeOutput(refined, ui=video_player(cls, refined))
