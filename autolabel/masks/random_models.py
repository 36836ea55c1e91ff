"""SAM-family mask models with random weights, for tests and benchmarks (no download needed).

Speed and memory depend on the architecture, not on weight values, so these write what
``--mask-model`` takes: a ``save_pretrained``-style folder (``config.json``, ``model.safetensors``,
the processor's files) for the transformers families, at a tiny size (128 px input) or the real
one (``full=True``: SAM 2.1 Hiera-L's architecture at 1024 px), and an Ultralytics checkpoint
named as Ultralytics' builder expects.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path


def _save(model, processor, folder: Path) -> Path:
    """config.json (full, not a diff against defaults a config may build from the hub), safetensors, processor."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    model.config.to_json_file(str(folder / "config.json"), use_diff=False)
    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    processor.save_pretrained(str(folder))
    return folder


def tiny_sam2(seed: int = 0, image_size: int = 128):
    """A tiny random ``Sam2Model`` and its processor (the Hiera recipe of the shared notes)."""
    import torch
    from transformers import Sam2Config, Sam2ImageProcessorFast, Sam2Model, Sam2Processor
    from transformers.models.sam2.configuration_sam2 import (
        Sam2HieraDetConfig,
        Sam2MaskDecoderConfig,
        Sam2PromptEncoderConfig,
        Sam2VisionConfig,
    )

    torch.manual_seed(seed)
    s = image_size // 4
    backbone = Sam2HieraDetConfig(
        hidden_size=12,
        image_size=[image_size, image_size],
        patch_kernel_size=[7, 7],
        patch_stride=[4, 4],
        patch_padding=[3, 3],
        blocks_per_stage=[1, 2, 7, 2],
        embed_dim_per_stage=[12, 24, 48, 96],
    )
    vision = Sam2VisionConfig(
        backbone_config=backbone,
        backbone_channel_list=[96, 48, 24, 12],
        backbone_feature_sizes=[[s, s], [s // 2, s // 2], [s // 4, s // 4]],
        fpn_hidden_size=128,
    )
    config = Sam2Config(
        vision_config=vision,
        prompt_encoder_config=Sam2PromptEncoderConfig(hidden_size=128, image_size=image_size, patch_size=16),
        mask_decoder_config=Sam2MaskDecoderConfig(
            hidden_size=128, num_hidden_layers=2, num_attention_heads=2, mlp_dim=64, iou_head_hidden_dim=32
        ),
    )
    processor = Sam2Processor(
        Sam2ImageProcessorFast(size={"height": image_size, "width": image_size}, mask_size={"height": s, "width": s})
    )
    return Sam2Model(config).eval(), processor


def full_sam2(seed: int = 0):
    """SAM 2.1 Hiera-L's architecture (224M parameters, 1024 px input) with random weights."""
    import torch
    from transformers import Sam2Config, Sam2ImageProcessorFast, Sam2Model, Sam2Processor
    from transformers.models.sam2.configuration_sam2 import Sam2HieraDetConfig, Sam2VisionConfig

    torch.manual_seed(seed)
    backbone = Sam2HieraDetConfig(
        hidden_size=144,
        num_attention_heads=2,
        blocks_per_stage=[2, 6, 36, 4],
        embed_dim_per_stage=[144, 288, 576, 1152],
        num_attention_heads_per_stage=[2, 4, 8, 16],
        window_size_per_stage=[8, 4, 16, 8],
        global_attention_blocks=[23, 33, 43],
    )
    vision = Sam2VisionConfig(backbone_config=backbone, backbone_channel_list=[1152, 576, 288, 144])
    return Sam2Model(Sam2Config(vision_config=vision)).eval(), Sam2Processor(Sam2ImageProcessorFast())


def tiny_sam(seed: int = 0, hq: bool = False, image_size: int = 128):
    """A tiny random ``SamModel`` (or ``SamHQModel``) and its processor."""
    import torch
    from transformers import SamImageProcessor

    if hq:
        from transformers import SamHQConfig as Config
        from transformers import SamHQModel as Model
        from transformers import SamHQProcessor as Processor
        from transformers.models.sam_hq.configuration_sam_hq import SamHQMaskDecoderConfig as Decoder
        from transformers.models.sam_hq.configuration_sam_hq import SamHQPromptEncoderConfig as Prompt
        from transformers.models.sam_hq.configuration_sam_hq import SamHQVisionConfig as Vision
    else:
        from transformers import SamConfig as Config
        from transformers import SamModel as Model
        from transformers import SamProcessor as Processor
        from transformers.models.sam.configuration_sam import SamMaskDecoderConfig as Decoder
        from transformers.models.sam.configuration_sam import SamPromptEncoderConfig as Prompt
        from transformers.models.sam.configuration_sam import SamVisionConfig as Vision

    torch.manual_seed(seed)
    vision = Vision(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        mlp_dim=64,
        image_size=image_size,
        patch_size=16,
        output_channels=32,
        global_attn_indexes=[1],
        window_size=4,
        num_pos_feats=16,
    )
    prompt = Prompt(hidden_size=32, image_size=image_size, patch_size=16, mask_input_channels=4)
    extra = {"vit_dim": 32} if hq else {}
    decoder = Decoder(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, mlp_dim=64, iou_head_hidden_dim=32, **extra
    )
    s = image_size // 4
    processor = Processor(
        SamImageProcessor(
            size={"longest_edge": image_size},
            pad_size={"height": image_size, "width": image_size},
            mask_size={"longest_edge": s},
            mask_pad_size={"height": s, "width": s},
        )
    )
    model = Model(Config(vision_config=vision, prompt_encoder_config=prompt, mask_decoder_config=decoder))
    return model.eval(), processor


def tiny_edgetam(seed: int = 0, image_size: int = 128):
    """A tiny random ``EdgeTamModel`` (its timm RepViT backbone, random) and its processor."""
    import torch
    from transformers import EdgeTamConfig, EdgeTamModel, Sam2ImageProcessorFast, Sam2Processor, TimmWrapperConfig
    from transformers.models.edgetam.configuration_edgetam import (
        EdgeTamMaskDecoderConfig,
        EdgeTamPromptEncoderConfig,
        EdgeTamVisionConfig,
    )

    torch.manual_seed(seed)
    s = image_size // 4
    backbone = TimmWrapperConfig(
        architecture="repvit_m1", model_args={"in_chans": 3, "features_only": True, "out_indices": [0, 1, 2, 3]}
    )
    vision = EdgeTamVisionConfig(
        backbone_config=backbone,
        backbone_channel_list=[384, 192, 96, 48],
        backbone_feature_sizes=[[s, s], [s // 2, s // 2], [s // 4, s // 4]],
        fpn_hidden_size=64,
    )
    config = EdgeTamConfig(
        vision_config=vision,
        prompt_encoder_config=EdgeTamPromptEncoderConfig(hidden_size=64, image_size=image_size, patch_size=16),
        mask_decoder_config=EdgeTamMaskDecoderConfig(
            hidden_size=64, num_hidden_layers=2, num_attention_heads=2, mlp_dim=64, iou_head_hidden_dim=32
        ),
    )
    processor = Sam2Processor(
        Sam2ImageProcessorFast(size={"height": image_size, "width": image_size}, mask_size={"height": s, "width": s})
    )
    return EdgeTamModel(config).eval(), processor


def write_tiny(kind: str, folder: Path, seed: int = 0) -> Path:
    """A tiny random model of ``kind`` (sam2, sam, sam-hq, edgetam) saved in ``folder``; returns the folder."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if kind == "sam2":
            model, processor = tiny_sam2(seed)
        elif kind in ("sam", "sam-hq"):
            model, processor = tiny_sam(seed, hq=kind == "sam-hq")
        elif kind == "edgetam":
            model, processor = tiny_edgetam(seed)
        else:
            raise ValueError(f"no tiny model of {kind!r}")
        return _save(model, processor, folder)


def write_full_sam2(folder: Path, seed: int = 0) -> Path:
    """SAM 2.1 Hiera-L's architecture with random weights, saved in ``folder``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _save(*full_sam2(seed), folder)


def fake_hub_config(hf_home: Path, repo_id: str, config: dict, commit: str = "0" * 40) -> Path:
    """Puts a ``config.json`` of ``repo_id`` into a Hugging Face cache (tests: EdgeTAM's backbone, offline)."""
    repo = hf_home / "hub" / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    path = snapshot / "config.json"
    path.write_text(json.dumps(config))
    return path


def write_ultralytics_sam(folder: Path, name: str = "mobile_sam.pt", seed: int = 0) -> Path:
    """A random Ultralytics SAM checkpoint (a state dict), under the name its builder picks the architecture by."""
    import torch

    from autolabel.yolo import ultralytics_env

    ultralytics_env()
    from ultralytics.models.sam.build import sam_model_map

    torch.manual_seed(seed)
    model = sam_model_map[name]()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    torch.save(model.state_dict(), path)
    return path
