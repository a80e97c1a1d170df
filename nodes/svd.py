"""Stage 2a nodes: load Stable Video Diffusion, fine-tune the masked temporal + spatial LoRAs, load LoRAs."""

from __future__ import annotations

import os
import re

import comfy.model_management
import folder_paths
import torch

from ._api import Progress, io, model_path, releasing_memory, require_finite, ui, video_player, writable_folder

SVDType = io.Custom("RECAPTURE_SVD")
LoRAType = io.Custom("RECAPTURE_LORA")
LORA_SUBFOLDER = "recapture"
DTYPES = ("auto", "bf16", "fp16", "fp32")


def _svd_choices() -> list[str]:
    """Single-file checkpoints (``checkpoints/...``) and diffusers SVD folders (``diffusers/...``)."""
    from ..recapture.svd import is_diffusers_svd_folder

    files = [f"checkpoints/{f}" for f in folder_paths.get_filename_list("checkpoints") if f.endswith(".safetensors")]
    folders = set()
    for root in folder_paths.get_folder_paths("diffusers"):
        if os.path.isdir(root):
            folders.update(n for n in os.listdir(root) if is_diffusers_svd_folder(os.path.join(root, n)))
    return files + [f"diffusers/{n}" for n in sorted(folders)]


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
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[choice]


class ReCaptureLoadSVD(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ReCaptureLoadSVD",
            display_name="ReCapture Load SVD",
            category="ReCapture/svd",
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


def _free_lora_name(name: str) -> str:
    """A file stem under models/loras/recapture/ that no existing file uses (never overwrite)."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,100}", name) or ".." in name:
        raise ValueError(f"lora_name {name!r} may only use letters, digits, '_', '-' and '.' (no folders): it "
                         "becomes models/loras/recapture/<lora_name>_temporal.safetensors")
    folder, stem, n = _lora_dir(), name, 1
    while any(os.path.exists(os.path.join(folder, f"{stem}_{a}.safetensors")) for a in ("temporal", "spatial")):
        n += 1
        stem = f"{name}_{n}"
    return stem


class ReCaptureTrainMaskedLoRA(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ReCaptureTrainMaskedLoRA",
            display_name="ReCapture Train Masked LoRA",
            category="ReCapture/svd",
            description=(
                "Fine-tunes SVD on this one video: a temporal LoRA learns the anchor's camera motion (loss only "
                "where the anchor is valid) and a spatial LoRA learns the source's appearance (temporal layers "
                "off). Writes both to models/loras/recapture/ in core ComfyUI's LoRA format."),
            inputs=[
                SVDType.Input("svd", tooltip="From ReCapture Load SVD."),
                io.Image.Input("anchor", tooltip="The anchor video from ReCapture Render Anchor."),
                io.Mask.Input("mask", tooltip="Its validity mask (1 = valid), from ReCapture Render Anchor."),
                io.Image.Input("source", tooltip="The source frames, at the anchor's size."),
                io.Int.Input("steps", default=400, min=1, max=100_000, tooltip="Training steps (paper: 400)."),
                io.Int.Input("frames", default=0, min=0, max=10_000,
                             tooltip="Train on the first N frames of the anchor and source (0 = all of them)."),
                io.Float.Input("learning_rate", default=5e-4, min=1e-6, max=0.1, step=1e-5,
                               tooltip="AdamW learning rate (paper: 5e-4)."),
                io.Int.Input("rank", default=16, min=1, max=256, tooltip="LoRA rank (paper: 16)."),
                io.Int.Input("seed", default=0, min=0, max=2**31 - 1, control_after_generate=True,
                             tooltip="Seed of the LoRA initialisation, noise and sigma draws."),
                io.Int.Input("conditioning_frame", default=0, min=0, max=10_000,
                             tooltip="Frame used as the image prompt (0 = first, as the sampler uses)."),
                io.Int.Input("fps", default=7, min=1, max=60, tooltip="SVD's fps conditioning (id = fps - 1)."),
                io.Int.Input("motion_bucket_id", default=127, min=0, max=1023, tooltip="SVD's motion conditioning."),
                io.Float.Input("noise_aug_strength", default=0.02, min=0.0, max=1.0, step=0.01,
                               tooltip="Noise added to the image prompt, as at sampling time."),
                io.Int.Input("mask_erosion", default=0, min=0, max=8,
                             tooltip="Extra latent pixels (8 px each) ignored around holes."),
                io.String.Input("lora_name", default="recapture",
                                tooltip="File stem: models/loras/recapture/<name>_temporal / _spatial.safetensors "
                                        "(a number is added instead of overwriting)."),
                io.Boolean.Input("low_memory", default=False, optional=True,
                                 tooltip="For 10-12 GB GPUs: keeps nothing costly through the backward pass, "
                                         "recomputes the feed-forwards in slices and encodes 2 frames at a time (14 "
                                         "frames at 1024x576: about 8 GB instead of 12). Same "
                                         "result; about a fifth more arithmetic per step."),
            ],
            outputs=[
                LoRAType.Output("lora", display_name="lora", tooltip="Both trained LoRAs, for the sampler."),
                io.Image.Output("loss_curve", display_name="loss_curve", tooltip="Temporal and spatial loss over steps."),
            ],
        )

    @classmethod
    def execute(cls, svd, anchor, mask, source, steps, frames, learning_rate, rank, seed, conditioning_frame, fps,
                motion_bucket_id, noise_aug_strength, mask_erosion, lora_name, low_memory=False) -> io.NodeOutput:
        from PIL import Image

        from ..recapture.lora import save_lora_file
        from ..recapture.train import TrainConfig, loss_curve_image, train_recapture_lora

        for name, value, maker in (("anchor", anchor, "Render Anchor"), ("mask", mask, "Render Anchor"),
                                   ("source", source, "Load Video")):
            require_finite(name, value, f"connect the {name} straight from ReCapture {maker}")
        stem = _free_lora_name(lora_name)
        config = TrainConfig(rank=rank, learning_rate=learning_rate, steps=steps, seed=seed,
                             conditioning_frame=conditioning_frame, fps=fps, motion_bucket_id=motion_bucket_id,
                             noise_aug_strength=noise_aug_strength, mask_erosion=mask_erosion, low_memory=low_memory)
        progress = Progress(steps)
        losses: list[tuple[float, float]] = []

        def on_step(step: int, temporal: float, spatial: float) -> None:
            losses.append((temporal, spatial))
            live = step % 10 == 9 or step == steps - 1  # the loss curve, live in the node
            curve = Image.fromarray((loss_curve_image(losses).numpy() * 255).astype("uint8")) if live else None
            progress.advance(preview=curve, detail=f"temporal loss {temporal:.4f} · spatial {spatial:.4f}")

        count = frames or len(anchor)
        comfy.model_management.unload_all_models()
        comfy.model_management.soft_empty_cache()
        with torch.inference_mode(False), releasing_memory():  # training needs autograd
            mask = mask if mask.ndim == 3 else mask[None]
            lora = train_recapture_lora(svd, anchor[:count].clone(), mask[:count].clone(), source[:count].clone(),
                                        config, on_step=on_step)
        folder = _lora_dir()
        for adapter in ("temporal", "spatial"):
            save_lora_file(os.path.join(folder, f"{stem}_{adapter}.safetensors"), getattr(lora, adapter), adapter,
                           lora.rank, lora.alpha, settings=lora.config | {"model": svd.name})
        curve = loss_curve_image(lora.losses)[None]
        return io.NodeOutput(lora, curve, ui=ui.PreviewImage(curve, cls=cls))


class ReCaptureLoadLoRA(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        files = [f for f in folder_paths.get_filename_list("loras") if f.endswith(".safetensors")]
        return io.Schema(
            node_id="ReCaptureLoadLoRA",
            display_name="ReCapture Load LoRA",
            category="ReCapture/svd",
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
    def fingerprint_inputs(cls, temporal: str, spatial: str) -> str:
        return ";".join(str(os.path.getmtime(folder_paths.get_full_path_or_raise("loras", f))) for f in (temporal, spatial))

    @classmethod
    def execute(cls, temporal: str, spatial: str) -> io.NodeOutput:
        from ..recapture.lora import load_lora_file
        from ..recapture.train import lora_from_files

        t_state, t_meta = load_lora_file(folder_paths.get_full_path_or_raise("loras", temporal))
        s_state, s_meta = load_lora_file(folder_paths.get_full_path_or_raise("loras", spatial))
        for name, meta, wanted in ((temporal, t_meta, "temporal"), (spatial, s_meta, "spatial")):
            if meta.get("recapture.adapter", wanted) != wanted:
                raise ValueError(f"{name} is a {meta['recapture.adapter']} LoRA, not a {wanted} one: swap the inputs")
        return io.NodeOutput(lora_from_files(t_state, s_state))


PROMPT_FRAMES = ("first anchor frame", "first source frame")


def _sample_inputs() -> list:
    return [
        io.Int.Input("steps", default=25, min=1, max=500, tooltip="Sampling steps (svd 25, svd_xt 30)."),
        io.Int.Input("seed", default=0, min=0, max=2**31 - 1, control_after_generate=True, tooltip="Noise seed."),
    ]


def _sampling_low_memory_input():
    """The sampler's and the refiner's low_memory switch (SampleConfig.low_memory)."""
    return io.Boolean.Input("low_memory", default=False, optional=True,
                            tooltip="For GPUs with 8-12 GB: the two guidance branches run one after the other, the "
                                    "feed-forwards over slices of the frames, and the UNet leaves the GPU while the VAE "
                                    "works (with decode_chunk_size 2, 25 frames at "
                                    "1024x576 need about 5.5 GB instead of 12.5). A little slower.")


class ReCaptureSVDDualLoRASample(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ReCaptureSVDDualLoRASample",
            display_name="ReCapture SVD Dual-LoRA Sample",
            category="ReCapture/svd",
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
                *_sample_inputs(),
                io.Float.Input("min_guidance", default=1.0, min=0.0, max=20.0, step=0.1,
                               tooltip="Classifier-free guidance at the first frame; it rises linearly..."),
                io.Float.Input("max_guidance", default=3.0, min=0.0, max=20.0, step=0.1,
                               tooltip="...to this at the last frame (svd_xt: 3.0, svd: 2.5)."),
                io.Int.Input("fps", default=7, min=1, max=60, tooltip="SVD's fps conditioning; use the training's."),
                io.Int.Input("motion_bucket_id", default=127, min=0, max=1023, tooltip="SVD's motion conditioning."),
                io.Float.Input("noise_aug_strength", default=0.02, min=0.0, max=1.0, step=0.01,
                               tooltip="Noise added to the image prompt."),
                io.Float.Input("temporal_strength", default=1.0, min=0.0, max=2.0, step=0.05,
                               tooltip="Strength of the temporal (camera motion) LoRA."),
                io.Float.Input("spatial_strength", default=1.0, min=0.0, max=2.0, step=0.05,
                               tooltip="Strength of the spatial (appearance) LoRA."),
                io.Int.Input("decode_chunk_size", default=8, min=1, max=64,
                             tooltip="Frames decoded at once by the VAE; lower it if memory runs out."),
                _sampling_low_memory_input(),
                io.Image.Input("source", optional=True, tooltip="The source frames, for image_prompt = first source frame."),
            ],
            outputs=[io.Image.Output("frames", display_name="frames", tooltip="The sampled video frames.")],
        )

    @classmethod
    def execute(cls, svd, lora, anchor, image_prompt, steps, seed, min_guidance, max_guidance, fps,
                motion_bucket_id, noise_aug_strength, temporal_strength, spatial_strength, decode_chunk_size,
                low_memory=False, source=None) -> io.NodeOutput:
        from ..recapture.sampling import SampleConfig, sample_video

        if image_prompt == PROMPT_FRAMES[1] and source is None:
            raise ValueError("image_prompt is the first source frame but no source is connected: connect the source "
                             "frames or use the first anchor frame")
        require_finite("anchor", anchor, "connect the anchor straight from ReCapture Render Anchor")
        if source is not None:
            require_finite("source", source, "connect the source frames straight from ReCapture Load Video")
        prompt = (source if image_prompt == PROMPT_FRAMES[1] else anchor)[0]
        config = SampleConfig(steps=steps, min_guidance=min_guidance, max_guidance=max_guidance, fps=fps,
                              motion_bucket_id=motion_bucket_id, noise_aug_strength=noise_aug_strength, seed=seed,
                              temporal_strength=temporal_strength, spatial_strength=spatial_strength,
                              decode_chunk_size=decode_chunk_size, low_memory=low_memory)
        progress = Progress(steps)
        with torch.inference_mode(False), releasing_memory():
            frames = sample_video(svd, lora, prompt.clone(), anchor.shape[0], config, lambda _: progress.advance())
        return io.NodeOutput(frames, ui=video_player(cls, frames))


class ReCaptureSDEditRefine(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ReCaptureSDEditRefine",
            display_name="ReCapture SDEdit Refine",
            category="ReCapture/svd",
            description="Sharpens sampled frames: noises them to the level of `strength` and denoises again with the "
                        "spatial LoRA only (SDEdit). Strength 0 returns the input (through the VAE).",
            inputs=[
                SVDType.Input("svd", tooltip="From ReCapture Load SVD."),
                LoRAType.Input("lora", tooltip="The LoRA pair; only its spatial LoRA is used."),
                io.Image.Input("frames", tooltip="Frames to refine (e.g. from the dual-LoRA sampler)."),
                io.Float.Input("strength", default=0.3, min=0.0, max=1.0, step=0.05,
                               tooltip="How far to re-noise: 0 = unchanged, 1 = from pure noise."),
                *_sample_inputs(),
                io.Int.Input("decode_chunk_size", default=8, min=1, max=64, optional=True,
                             tooltip="Frames the VAE encodes and decodes at once; lower it if memory runs out."),
                _sampling_low_memory_input(),
            ],
            outputs=[io.Image.Output("refined", display_name="refined", tooltip="The refined frames.")],
        )

    @classmethod
    def execute(cls, svd, lora, frames, strength, steps, seed, decode_chunk_size=8, low_memory=False) -> io.NodeOutput:
        from ..recapture.sampling import SampleConfig, sdedit

        require_finite("frames", frames, "connect the frames straight from ReCapture SVD Dual-LoRA Sample")
        config = SampleConfig(steps=steps, seed=seed, decode_chunk_size=decode_chunk_size, low_memory=low_memory)
        progress = Progress(max(1, round(steps * strength)))
        with torch.inference_mode(False), releasing_memory():
            refined = sdedit(svd, lora, frames.clone(), strength, config, lambda _: progress.advance())
        return io.NodeOutput(refined, ui=video_player(cls, refined))
