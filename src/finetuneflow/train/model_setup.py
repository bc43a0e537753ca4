"""The model a run trains: LoRA on a full-precision base, LoRA on a 4-bit base (QLoRA), or every
weight (full fine-tuning); plus gradient checkpointing.

Dispatch is by ``TrainConfig.method``; the first thing decided is whether the method can run on
this device at all, so a CPU user who picked QLoRA gets LoRA and a sentence saying why instead of
a crash deep inside bitsandbytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from finetuneflow.models import lora_fused, norm_fused
from finetuneflow.models.load import load_causal_lm
from finetuneflow.models.lora import lora_config
from finetuneflow.train.config import TrainConfig

FULL_MAX_PARAMS = 2_000_000_000  # beyond this, full fine-tuning's optimizer state is not "at home"


@dataclass
class Built:
    """The model to train and what was actually chosen."""

    model: Any
    method: str  # lora | qlora | full (after any fallback)
    notes: list[str] = field(default_factory=list)  # said to the user and kept in config.json
    attention: str = "sdpa"


def resolve_method(cfg: TrainConfig, device: str) -> tuple[str, list[str]]:
    """The method that will run on ``device``, with the reasons for any change."""
    if cfg.method != "qlora":
        return cfg.method, []
    if not device.startswith("cuda"):
        return "lora", [
            "QLoRA's 4-bit base needs a CUDA GPU here; training plain LoRA instead (on a CPU a 4-bit "
            "base saves memory but not time: bf16 LoRA runs as fast). Set method='lora' to silence this."
        ]
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        return "lora", [
            "QLoRA needs bitsandbytes: pip install 'finetuneflow[qlora]'. Training plain LoRA instead."
        ]
    return "qlora", []


def build_model(
    model_dir: Path, cfg: TrainConfig, device: str, compute_dtype: Any = None, load_on: str | None = None
) -> Built:
    """Load the base and make the configured weights trainable.

    ``device`` is where the run computes (it decides the method and attention kernel); ``load_on``
    where the weights are first put, when that differs (FSDP reads the base into CPU memory and
    moves each unit to the GPU as it shards it).

    With a bf16/fp16 ``compute_dtype`` a LoRA base is loaded in that dtype, its norm weights (1-D)
    in fp32: autocast casts every fp32 weight to bf16 for each matmul anyway and caches no cast of
    a frozen tensor, so an fp32 base costs twice the memory and a cast per forward and backward for
    the same matmul inputs. The adapter's matrices stay fp32 (they are trained).
    """
    method, notes = resolve_method(cfg, device)
    attention = attention_kernel(cfg, device)
    where = load_on or device
    if method == "qlora":
        model = load_4bit(model_dir, device, attention, compute_dtype)
    elif method == "lora" and compute_dtype is not None:
        model = load_causal_lm(model_dir, where, compute_dtype, attention)
        _norms_to_fp32(model)
    else:
        model = load_causal_lm(model_dir, where, attention=attention)
    if method == "full":
        n = sum(p.numel() for p in model.parameters())
        if n > FULL_MAX_PARAMS:
            raise ValueError(
                f"full fine-tuning of {n / 1e9:.1f}B parameters needs ~16 bytes each for weights, "
                "gradients and AdamW state; use method='lora' (or 'qlora' on a GPU)"
            )
        for p in model.parameters():
            p.requires_grad_(True)
    if cfg.gradient_checkpointing:
        # non-reentrant checkpointing needs no input grads, so it works under frozen embeddings
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    if method != "full":
        model = attach_lora(model, cfg)
        if compute_dtype is not None:
            _no_lora_input_casts(model)
        lora_fused.fuse(model)  # base + adapter in one autograd function (models/lora_fused.py)
    norm_fused.fuse(model)  # RMSNorm that writes the compute dtype (models/norm_fused.py)
    return Built(model, method, notes, attention)


def _no_lora_input_casts(model: Any) -> None:
    """Under autocast, let each LoRA layer take its bf16 input as it is: peft casts it to the fp32
    adapter's dtype, and autocast casts it straight back to bf16 for the matmul (two copies of the
    activations per adapted layer, forward and backward, for the same numbers, bit for bit; ~5% of
    a CPU step in ``bench/train.py --profile``). With LoRA dropout on, its masks are drawn on the
    bf16 input: other random draws, the same distribution."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    for module in model.modules():
        if isinstance(module, BaseTunerLayer):
            module.cast_input_dtype_enabled = False  # type: ignore[attr-defined]  # set in LoraLayer


# Rows up to this long train with our attention on a CPU. In training it keeps per example, never a
# row's square; evaluation and the recall probe (no gradient, model.eval()) take its masked path,
# whose (heads x len x len) scores are made and freed layer by layer: ~1 GB a row at 2048 tokens
# with 32 heads, 4x that at 4096, so longer rows keep SDPA. Measured against SDPA (SmolLM2-135M,
# fp32, one row, 3 steps, the bench's chat rows; AVX2 AMD EPYC, one thread): 2048 tokens 110 vs 64
# tokens/s at 4.57 vs 4.84 GiB; 4096 tokens 107 vs 42 at 8.71 vs 9.52 GiB.
EAGER_MAX_LEN = 2048


def attention_kernel(cfg: TrainConfig, device: str) -> str:
    """The attention implementation for this run.

    On a CPU, torch's fused SDPA kernel with the block-diagonal mask of packed rows took 37% of a
    SmolLM2-135M step (512-token rows, bf16); plain matmuls + softmax ran the whole step ~30%
    faster (387 vs 293 tok/s). ``ftf_eager`` (train/attention.py) now trains per packed example
    (no mask at all): batched matmuls up to 768 tokens, SDPA's causal kernel beyond.
    GPUs keep SDPA (flash kernels); ``attention='eager'`` and ``'sdpa'`` force either.
    """
    if cfg.attention != "auto":
        return cfg.attention
    if device != "cpu" or cfg.max_len > EAGER_MAX_LEN:
        return "sdpa"
    from finetuneflow.train.attention import register

    return register()  # our matmul attention: eager's numbers, a third of its saved probabilities


def _norms_to_fp32(model: Any) -> None:
    for p in model.parameters():
        if p.ndim < 2:
            p.data = p.data.float()


def load_4bit(model_dir: Path, device: str, attention: str = "sdpa", compute_dtype: Any = None) -> Any:
    """The base quantized to 4-bit NF4 on load (bitsandbytes), compute in bf16 (or ``compute_dtype``);
    the weights left unquantized (embeddings, head) in that dtype too, as a LoRA base is, norms in
    fp32 (half the memory of an fp32 rest; on an H200, ``bench/gpu.py``, the same losses).

    Raises:
        ImportError: bitsandbytes is not installed.
    """
    import torch
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    dtype = compute_dtype if compute_dtype in (torch.bfloat16, torch.float16) else torch.bfloat16
    quant = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=dtype,
    )
    model: Any = AutoModelForCausalLM.from_pretrained(
        str(model_dir),
        quantization_config=quant,
        dtype=dtype,
        device_map={"": device},
        attn_implementation=attention,
        use_safetensors=True,
        trust_remote_code=False,
    )
    for p in model.parameters():  # what peft's prepare_model_for_kbit_training does, minus its casts
        p.requires_grad_(False)
    _norms_to_fp32(model)  # the 4-bit weights are stored 2-D (packed bytes): only norms are 1-D
    return model


def attach_lora(model: Any, cfg: TrainConfig) -> Any:
    """Wrap ``model`` with fresh LoRA adapters (only they are trainable)."""
    from peft import get_peft_model

    return get_peft_model(model, lora_config(cfg.lora, "CAUSAL_LM"))


def trainable_count(model: Any) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)
