"""ReCapture's two LoRAs on the SVD UNet, and SVD's image-only mode.

- ``temporal``: attention of the temporal transformer blocks (``attn1`` across frames, ``attn2`` to
  the image embedding). Trained on the anchor video with the masked loss: it learns the new camera's
  motion.
- ``spatial``: self-attention of the spatial transformer blocks. Trained on source frames with the
  temporal layers off: it learns the scene's appearance.

Only Linear layers are adapted (attention projections), which keeps the ComfyUI export one-to-one.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Iterator

import torch

ADAPTERS = ("temporal", "spatial")
# peft matches string targets with re.fullmatch against module names.
TARGETS = {
    "temporal": r".*temporal_transformer_blocks\.\d+\.(attn1|attn2)\.(to_q|to_k|to_v|to_out\.0)",
    # the leading "\." keeps temporal_transformer_blocks out
    "spatial": r".*\.transformer_blocks\.\d+\.attn1\.(to_q|to_k|to_v|to_out\.0)",
}


def inject_lora_adapters(unet: torch.nn.Module, rank: int = 16, alpha: float | None = None, seed: int = 0) -> None:
    """Adds the ``temporal`` and ``spatial`` adapters (LoRA weights in float32), both active, all frozen.

    peft draws LoRA A from the global random generator: it is drawn here from ``seed`` instead, without
    touching the caller's generator, so a training run is reproducible. peft also leaves only the last
    injected adapter active and marks adapters trainable as it activates them: both are re-activated
    frozen here, and the training chooses what trains.
    """
    from peft import LoraConfig, inject_adapter_in_model

    if not 1 <= rank <= 256:
        raise ValueError(f"LoRA rank must be between 1 and 256, got {rank}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for name in ADAPTERS:
            config = LoraConfig(r=rank, lora_alpha=alpha or rank, target_modules=TARGETS[name], lora_dropout=0.0,
                                init_lora_weights=True)
            with warnings.catch_warnings():  # peft warns that a second adapter joins the first: intended
                warnings.simplefilter("ignore", UserWarning)
                inject_adapter_in_model(config, unet, adapter_name=name)
    for layer in lora_layers(unet):
        layer.set_adapter(list(ADAPTERS), inference_mode=True)
    for name, param in unet.named_parameters():
        param.requires_grad_(False)
        if ".lora_" in name:
            param.data = param.data.float()


def lora_layers(unet: torch.nn.Module) -> list:
    from peft.tuners.lora import LoraLayer

    return [m for m in unet.modules() if isinstance(m, LoraLayer)]


def adapter_parameters(unet: torch.nn.Module, adapter: str) -> list[torch.nn.Parameter]:
    """The LoRA parameters of one adapter (``...lora_A.<adapter>.weight`` / ``lora_B``)."""
    return [p for n, p in unet.named_parameters() if ".lora_" in n and f".{adapter}." in n]


def set_lora_strengths(unet: torch.nn.Module, temporal: float = 1.0, spatial: float = 1.0) -> None:
    """Scales each adapter (0 switches it off); the LoRA update is ``strength * alpha / rank * B A``."""
    strengths = {"temporal": temporal, "spatial": spatial}
    for layer in lora_layers(unet):
        for adapter in layer.lora_A:
            layer.set_scale(adapter, strengths[adapter])


def remove_lora_adapters(unet: torch.nn.Module) -> None:
    """Takes both adapters out again: the UNet is the frozen base it was before injection."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    for name, module in list(unet.named_modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, BaseTunerLayer):
                setattr(module, child_name, child.get_base_layer())
    if hasattr(unet, "peft_config"):
        del unet.peft_config


@contextlib.contextmanager
def image_only_mode(unet: torch.nn.Module) -> Iterator[None]:
    """Switches SVD's temporal layers off: every frame is denoised on its own, as an image model.

    SVD mixes spatial and temporal branches with ``AlphaBlender``, which takes the spatial branch alone
    where ``image_only_indicator`` is 1; the UNet always passes zeros, so a forward pre-hook sets it to
    ones. Keep the training step's backward inside the block: gradient checkpointing re-runs forwards.
    """
    from diffusers.models.resnet import AlphaBlender

    def force_images(module, args, kwargs):
        indicator = kwargs.get("image_only_indicator")
        if indicator is not None:
            kwargs["image_only_indicator"] = torch.ones_like(indicator)
        return args, kwargs

    handles = [m.register_forward_pre_hook(force_images, with_kwargs=True)
               for m in unet.modules() if isinstance(m, AlphaBlender)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
