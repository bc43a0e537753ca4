"""What a training run needs (:func:`estimate_memory`) on the machine train/machine.py describes.

Pure enough for a web page: ``estimate_memory`` only does arithmetic on a model's ``config.json``;
it loads no model and imports no torch.

The estimate is a calibrated analytic model, not a simulation: its goal is "within ~30%", enough to
say "this will not fit, change X" before a run dies at step one.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from finetuneflow.models.loss import fused_chunk_logits
from finetuneflow.train.attention import kept_probabilities
from finetuneflow.train.config import TrainConfig
from finetuneflow.train.machine import Hardware
from finetuneflow.train.model_setup import attention_kernel

GIB = 1024**3

# --- calibration ---------------------------------------------------------------------------------
# Counted from this repo's loop, then checked against real runs (bench/train_memory.py: 2 steps of
# `ftf plan`'s micro-benchmark per configuration in a fresh process, the real SmolLM2-135M-Instruct,
# bench/train.py's chat rows packed to 512 tokens, 77% of tokens supervised; AVX2-only AMD EPYC,
# 2026-12-06; peak RSS of the whole process):
#   fp32, 1 / 2 / 4 rows of 512                 1.90 / 2.68 / 4.53 GiB
#   fp32, 2 rows x 2 side by side (2 threads)   4.36 GiB
#   fp32, 1 row of 1024                         2.76 GiB
#   fp32, 2 rows, sdpa / eager / checkpointing  2.72 / 3.45 / 1.64 GiB
#   fp32, 1 row of 2048, SDPA / ours            4.85 / 4.57 GiB
#   fp32, 2 rows, full fine-tune                3.92 GiB
#   fp32, 2 rows, LoRA dropout 0.05             4.14 GiB
#   bf16, 1 / 2 rows                            1.31 / 1.75 GiB
#   Gemma 3 270M, fp32, 1 / 2 rows              2.53 / 3.29 GiB (norms of its own formula)
# (tests/train/test_plan.py holds the same rows: the estimate must stay within 25% of each.)
# The loop (train/model_setup.py) runs Llama-formula RMSNorms through models/norm_fused.py (each
# keeps only its input) and plain LoRA linears through models/lora_fused.py (q/k/v share one saved
# input, the rank-r products are tiny), and a LoRA run's frozen head through models/loss.py's fused
# loss (one chunk of fp32 logits, never the (tokens x vocab) ones). Saved for the backward pass
# per token per block, then: the two norms' inputs (the residual stream, 2h, in the weights' dtype);
# their outputs, the query's copy and attention's output (2h + 2q) and the keys and values (2kv)
# in the compute dtype; the MLP's gate, its SiLU, up and their product (4i). With the attention's
# probabilities (below) that counts ~52 KB per token per block in fp32 on SmolLM2-135M for a row
# holding one 512-token example; the runs measured 53-63 KB (their rows hold 1-3 examples):
# ALLOCATOR_SLACK covers the difference (short-lived gradients of the block being run backward,
# fragmentation).
RESIDUAL_VALUES_PER_H = 2.0
COMPUTE_VALUES_PER_H = 2.0
COMPUTE_VALUES_PER_Q = 2.0
COMPUTE_VALUES_PER_KV = 2.0
COMPUTE_VALUES_PER_I = 4.0
# Norms of another formula (Gemma's, LayerNorm) run transformers' own code, which also keeps fp32
# copies of the input and the normalised input (read from transformers; Gemma 3 has more norms per
# block than two, and its estimate reads 0.89-0.90 of the measured peak).
UNFUSED_NORM_FP32_VALUES_PER_H = 4.0
# LoRA dropout or DoRA run peft's own forward: every adapted linear keeps its own (dropped-out) input,
# mask and sum. Measured (fp32, 2 x 512, dropout 0.05): +1.46 GiB, ~50 KB more per token per block,
# 2.1x the inputs of the seven linears (5h + q + i values) at the slack below. DoRA keeps
# output-sized tensors instead; it is sized the same, unmeasured.
UNFUSED_LORA_INPUT_COPIES = 2.1
ALLOCATOR_SLACK = 1.2
# A head the loop cannot fuse (full fine-tuning trains it) materialises the logits of one chunk of
# supervised tokens: logits, their fp32 log-softmax and its gradient (~12 bytes per logit).
LOGIT_BYTES = 12.0
EAGER_BYTES = 9  # per element of transformers' eager attention probabilities (see _attention_bytes)
# With checkpointing the forward should keep only each block's input (h fp32 values), and the backward
# recompute one block at a time. Measured (bf16: 30 layers 0.50 MiB/token, 10 layers 0.26 MiB/token;
# fp32 30 layers 1.13 MiB/token, on the loop before the fusions) it keeps more: ~a quarter of a
# block's activations per block, plus ~3 blocks' worth of transient peak (recomputed activations,
# their gradients, allocator slack). On today's loop that still holds (fp32, 2 x 512: 1.64 and 1.75
# GiB in two runs, estimated 1.69).
CKPT_KEPT_PER_BLOCK = 0.26
CKPT_TRANSIENT_BLOCKS = 3.0
CPU_RUNTIME = int(0.45 * GIB)  # python + torch + transformers + peft + tokenizer + packed rows
CUDA_RUNTIME = int(0.6 * GIB)  # CUDA context + cuBLAS workspace + allocator reserve
QLORA_BYTES_PER_PARAM = 0.53  # NF4: 4 bits + an fp8/fp32 absmax per 64 weights (double quantised)
ADAM_BYTES = 8  # two fp32 moments per trained weight
HEADROOM = 0.85  # plan for 85% of what is free: the OS, page cache and other processes need the rest
# batch_size 0 (auto) on a CPU: at most this many rows per micro-batch in 16-bit, one in fp32 (the
# same activation bytes). In bf16, 2 rows gained 3-6% over 1 (AMD EPYC, AMX Xeon); in fp32 (an Intel
# Xeon without AMX, 2026-12-07, SmolLM2-135M, 512-token rows, one thread) 1 row trained at 151.7 and
# 152.2 tokens/s against 2 rows' 151.6 and 144.9, at 2.26-2.53 GiB against 3.02-3.09.
AUTO_CPU_ROWS = 2

NON_GATED = {"gpt2", "gpt_neox", "gptj", "opt", "bloom", "phi", "falcon", "starcoder2", "gpt_bigcode"}
# model types whose RMSNorm is Llama's formula (models/norm_fused.py checks the source when it runs;
# a type not listed is sized as transformers' own norm, the larger)
LLAMA_NORM_TYPES = {
    "llama", "mistral", "mixtral", "ministral", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe", "phi3",
    "granite", "granitemoe", "smollm3", "olmoe", "deepseek_v2", "deepseek_v3", "glm", "glm4",
    "exaone4", "hunyuan_v1_dense", "ernie4_5", "seed_oss", "apertus", "arcee", "jetmoe",
}  # fmt: skip
HEAD_BIAS_TYPES = {"phi", "gptj"}
LINEAR_NAMES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class Dims:
    """The shapes that decide memory, read from a config.json (Llama names; GPT-2 names accepted)."""

    hidden: int
    layers: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied: bool
    gated: bool  # SwiGLU-style MLP (gate, up, down) rather than two projections
    experts: int = 1  # MoE: MLP copies per layer, all held in memory
    active_experts: int = 1  # MoE: experts each token goes through (their activations are saved)
    positions: int = 0  # learned absolute position embeddings (GPT-2), else 0
    fused_norms: bool = True  # Llama-formula RMSNorms, which models/norm_fused.py runs
    sliding_window: int = 0  # local attention layers' window (Gemma 3, Mistral), else 0
    attention_dropout: float = 0.0  # the base model's own dropouts, on while it trains (GPT-2: 0.1)
    residual_dropout: float = 0.0
    plain_head: bool = False  # a head models/loss.py cannot fuse: a bias (Phi, GPT-J), Gemma 2's cap

    def linears(self) -> dict[str, tuple[int, int]]:
        """Per-layer linear layers as name -> (in, out), named the Llama way."""
        h, q, kv, i = (
            self.hidden,
            self.heads * self.head_dim,
            self.kv_heads * self.head_dim,
            self.intermediate,
        )
        out = {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h)}
        if self.gated:
            out.update(gate_proj=(h, i), up_proj=(h, i), down_proj=(i, h))
        else:
            out.update(up_proj=(h, i), down_proj=(i, h))
        return out


def dims(model_cfg: dict[str, Any]) -> Dims:
    """Shapes from a Hugging Face ``config.json`` dict (a multimodal one's ``text_config`` is used).

    Raises:
        ValueError: the config lacks the hidden size, layer count or vocabulary size.
    """
    c = model_cfg.get("text_config") or model_cfg
    hidden = c.get("hidden_size") or c.get("n_embd") or c.get("d_model")
    layers = c.get("num_hidden_layers") or c.get("n_layer") or c.get("num_layers")
    vocab = c.get("vocab_size")
    if not (hidden and layers and vocab):
        raise ValueError("config.json has no hidden_size / num_hidden_layers / vocab_size: cannot size it")
    heads = c.get("num_attention_heads") or c.get("n_head") or 1
    kind = str(c.get("model_type", "llama"))
    return Dims(
        hidden=hidden,
        layers=layers,
        intermediate=c.get("intermediate_size") or c.get("n_inner") or 4 * hidden,
        heads=heads,
        kv_heads=c.get("num_key_value_heads") or heads,
        head_dim=c.get("head_dim") or hidden // heads,
        vocab=vocab,
        tied=bool(c.get("tie_word_embeddings", True)),
        gated=kind not in NON_GATED,
        experts=c.get("num_local_experts") or c.get("num_experts") or 1,
        active_experts=c.get("num_experts_per_tok") or 1,
        positions=c.get("n_positions", 0) if kind == "gpt2" else 0,
        fused_norms=kind in LLAMA_NORM_TYPES,
        sliding_window=(c.get("sliding_window") or 0) if c.get("use_sliding_window", True) else 0,
        attention_dropout=c.get("attn_pdrop") or c.get("attention_dropout") or 0.0,
        residual_dropout=c.get("resid_pdrop") or c.get("hidden_dropout") or 0.0,
        plain_head=kind in HEAD_BIAS_TYPES or bool(c.get("final_logit_softcapping")),
    )


def param_count(d: Dims) -> int:
    """Weights of the model (embeddings, blocks, norms, head); biases are ignored (<0.1%)."""
    attn = sum(a * b for n, (a, b) in d.linears().items() if n in ("q_proj", "k_proj", "v_proj", "o_proj"))
    mlp = sum(a * b for n, (a, b) in d.linears().items() if n not in ("q_proj", "k_proj", "v_proj", "o_proj"))
    block = attn + mlp * d.experts + 2 * d.hidden  # two norms per block
    head = 0 if d.tied else d.vocab * d.hidden
    return d.vocab * d.hidden + d.positions * d.hidden + d.layers * block + d.hidden + head


def lora_params(d: Dims, r: int, targets: str, dora: bool = False) -> int:
    """Adapter weights: r * (in + out) per adapted linear (+ one magnitude per output with DoRA)."""
    layers = d.linears()
    names = list(layers) if targets.strip() == "all-linear" else [t.strip() for t in targets.split(",")]
    total = 0
    for name in names:
        # a name the estimator does not know (e.g. GPT-2's c_attn) is sized as a hidden x hidden layer
        a, b = layers.get(name, (d.hidden, d.hidden))
        copies = d.experts if name in ("gate_proj", "up_proj", "down_proj") else 1
        total += (r * (a + b) + (b if dora else 0)) * copies
    return total * d.layers


@dataclass
class MemoryEstimate:
    """Peak memory of one training step, in bytes, by what holds it."""

    weights: int  # the model itself (fp32 frozen/master weights, or NF4), + autocast's 16-bit copies
    trainable: int  # trained weights' gradients and AdamW moments (+ the adapter weights themselves)
    activations: int  # tensors saved for the backward pass
    logits: int  # LM-head logits of the supervised tokens of one loss chunk
    overhead: int  # runtime: libraries, CUDA context, tokenizer, packed rows
    params: int  # parameters of the base model
    trainable_params: int
    tokens: int  # tokens in memory at once (rows per micro-batch x side by side x max_len)
    compute: str  # "bf16", "fp16" or "fp32"

    @property
    def total(self) -> int:
        return self.weights + self.trainable + self.activations + self.logits + self.overhead

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "total": self.total, "total_gib": round(self.total / GIB, 2)}


def compute_precision(cfg: TrainConfig, hw: Hardware) -> str:
    """The precision a run would compute in: ``cfg.precision``, or what 'auto' picks on ``hw``.

    Mirrors hardware.autocast_dtype: bf16 on GPUs that have it, else fp16; bf16 on CPUs with native
    bf16 matmuls; fp32 elsewhere (including MPS).
    """
    if cfg.precision != "auto":
        return cfg.precision
    if hw.device == "cuda":
        return "bf16" if hw.gpu_bf16 else "fp16"
    return "bf16" if hw.device == "cpu" and hw.cpu_bf16 else "fp32"


def estimate_memory(
    model_cfg: dict[str, Any], cfg: TrainConfig, hw: Hardware, supervised_fraction: float = 0.5
) -> MemoryEstimate:
    """Analytic peak memory of a training step of ``cfg`` on a model described by ``model_cfg``.

    ``supervised_fraction`` is the share of tokens with a label (assistant turns and text); it sizes
    the LM-head logits. Raises ValueError for a config.json without the needed sizes.
    """
    d = dims(model_cfg)
    n = param_count(d)
    if cfg.method == "qlora" and hw.device != "cuda":  # 4-bit needs CUDA: the run trains LoRA
        cfg = dataclasses.replace(cfg, method="lora")
    compute = compute_precision(cfg, hw)
    half = compute != "fp32"
    split = auto_split(model_cfg, cfg, hw, supervised_fraction)
    rows = split.rows * split.side  # the rows in memory at once
    tokens = rows * cfg.max_len
    if cfg.method == "full":
        trained = n
        trainable = trained * (4 + ADAM_BYTES)  # gradient + two moments; the weight is in `weights`
    else:
        trained = lora_params(d, cfg.lora.r, cfg.lora.target_modules, cfg.lora.dora)
        trainable = trained * (4 + 4 + ADAM_BYTES)  # fp32 adapter weight, gradient, two moments
    supervised = int(tokens * supervised_fraction)
    if cfg.method == "full" or d.plain_head:  # transformers' head: its logits, a chunk at a time
        logits = int(min(supervised, cfg.loss_chunk) * d.vocab * LOGIT_BYTES)
    else:  # models/loss.py's fused head: a chunk of fp32 logits per thread, the states' gradient
        logits = split.side * 4 * fused_chunk_logits(not half) + supervised * d.hidden * (2 if half else 4)
    overhead = CUDA_RUNTIME if hw.device == "cuda" else CPU_RUNTIME
    return MemoryEstimate(
        weights=_weight_bytes(d, n, cfg, half),
        trainable=int(trainable),
        activations=int(_activations(d, cfg, hw, half, rows)),
        logits=logits,
        overhead=overhead,
        params=n,
        trainable_params=trained,
        tokens=tokens,
        compute=compute,
    )


@dataclass(frozen=True)
class Split:
    """How a step's rows run: ``rows`` per micro-batch, ``side`` micro-batches at once (CPU threads)."""

    rows: int
    side: int = 1


def auto_split(
    model_cfg: dict[str, Any], cfg: TrainConfig, hw: Hardware, supervised_fraction: float = 0.5
) -> Split:
    """``cfg.batch_size`` rows one micro-batch at a time, or for 0 (auto): the most of a step's rows
    per micro-batch whose estimate fits ``HEADROOM`` of the free memory, up to all of them on CUDA
    and ``AUTO_CPU_ROWS`` on a CPU (one in fp32; only splits that divide the step), and on a CPU as many
    micro-batches side by side as there are cores (``hw.cpu_cores``: the run's threads) and as
    memory allows (train/side_by_side.py; LoRA without dropout or gradient checkpointing only: a
    full fine-tune's per-micro-batch gradients are the model's size, and the others would make the
    run depend on the threads' timing)."""
    if cfg.batch_size:
        return Split(cfg.batch_size)
    step = cfg.step_rows

    def fits(rows: int) -> bool:
        split = dataclasses.replace(cfg, batch_size=rows, grad_accum=max(1, step // rows))
        need = estimate_memory(model_cfg, split, hw, supervised_fraction).total
        return need <= HEADROOM * hw.memory_available

    cpu_rows = AUTO_CPU_ROWS if compute_precision(cfg, hw) != "fp32" else 1
    cap = {"cuda": step, "cpu": cpu_rows}.get(hw.device, 1)  # MPS: unmeasured, one row as before
    rows = next((r for r in range(min(cap, step), 1, -1) if step % r == 0 and fits(r)), 1)
    alone = cfg.method == "full" or cfg.gradient_checkpointing or cfg.lora.dropout > 0  # side_by_side.safe
    threads = 1 if alone or hw.device != "cpu" else hw.cpu_cores
    side = next((k for k in range(min(threads, step // rows), 1, -1) if fits(rows * k)), 1)
    return Split(rows, side)


def _weight_bytes(d: Dims, n: int, cfg: TrainConfig, half: bool) -> int:
    """The model's own weights as the run holds them, with autocast's 16-bit copies."""
    linear_w = n - d.vocab * d.hidden - d.positions * d.hidden - (2 * d.layers + 1) * d.hidden
    if cfg.method == "qlora":  # NF4 blocks; embeddings, norms and the head stay 16-bit
        return int(linear_w * QLORA_BYTES_PER_PARAM + 2 * (n - linear_w))
    if cfg.method == "lora" and half:
        return 2 * n  # the frozen base is loaded in the compute dtype (train/model_setup.build_model)
    if not half:
        return 4 * n
    # fp32 weights under autocast: its 16-bit copies are saved for the backward, all blocks' at
    # once or one block's under checkpointing, and the head's (vocab x hidden) always
    copied = linear_w // d.layers if cfg.gradient_checkpointing else linear_w
    return 4 * n + 2 * (copied + d.vocab * d.hidden)


def _activations(d: Dims, cfg: TrainConfig, hw: Hardware, half: bool, rows: int) -> float:
    """What the blocks save for the backward pass, all rows in memory at once."""
    compute_bytes = 2 if half else 4
    resident = 2 if cfg.method != "full" and (half or cfg.method == "qlora") else 4  # the weights' dtype
    peft_forward = cfg.method != "full" and (cfg.lora.dropout > 0 or cfg.lora.dora)
    path = _attention_path(d, cfg, hw)
    per_token = _activation_bytes(d, compute_bytes, resident, peft_forward, path != "packed")
    per_row = _attention_bytes(d, cfg, path, compute_bytes)
    if cfg.gradient_checkpointing:
        blocks = d.layers * CKPT_KEPT_PER_BLOCK + min(CKPT_TRANSIENT_BLOCKS, d.layers)
    else:
        blocks = d.layers
    experts = 0.0
    if d.experts > 1 and cfg.method != "full":  # peft merges each layer's expert weights, kept
        experts = d.layers * d.experts * (3 if d.gated else 2) * d.hidden * d.intermediate * compute_bytes
    return (rows * cfg.max_len * per_token + rows * per_row) * blocks + experts


def _attention_path(d: Dims, cfg: TrainConfig, hw: Hardware) -> str:
    """How training attends: "packed" (train/attention.py per example), "masked" (a row's whole
    square with its mask: our fallback past a sliding window, or the model's attention dropout),
    "eager" (transformers') or "sdpa"."""
    kernel = attention_kernel(cfg, hw.device)
    if d.attention_dropout or kernel == "eager":
        return "eager"
    if kernel == "sdpa":
        return "sdpa"
    return "masked" if d.sliding_window and cfg.max_len > d.sliding_window else "packed"


def _activation_bytes(
    d: Dims, compute_bytes: int, resident_bytes: int, peft_forward: bool, repeated_kv: bool
) -> float:
    """Bytes saved for backward per token per block, attention's (len x len) tensors aside (see the
    calibration note at the top); ``peft_forward``: the LoRA layers run peft's own forward;
    ``repeated_kv``: keys and values repeated to every query head (all paths but ours)."""
    q, kv = d.heads * d.head_dim, d.kv_heads * d.head_dim
    compute = (
        COMPUTE_VALUES_PER_H * d.hidden
        + COMPUTE_VALUES_PER_Q * q
        + COMPUTE_VALUES_PER_KV * (q if repeated_kv else kv)
        + COMPUTE_VALUES_PER_I * d.intermediate * d.active_experts
        + (2 * d.active_experts * d.hidden if d.experts > 1 else 0)  # routed copies of the input, outputs
    )
    if peft_forward:
        compute += UNFUSED_LORA_INPUT_COPIES * (5 * d.hidden + q + d.intermediate * d.active_experts)
    unfused = 0.0 if d.fused_norms else 4 * UNFUSED_NORM_FP32_VALUES_PER_H * d.hidden
    masks = 2 * d.hidden if d.residual_dropout else 0  # two residual dropouts' masks, a byte each
    return ALLOCATOR_SLACK * (
        resident_bytes * RESIDUAL_VALUES_PER_H * d.hidden + compute_bytes * compute + unfused + masks
    )


def _attention_bytes(d: Dims, cfg: TrainConfig, path: str, compute_bytes: int) -> float:
    """Bytes of (len x len) tensors one row keeps per block. SDPA: the block-diagonal mask
    transformers builds for packed rows (the kernel recomputes the probabilities). Transformers'
    eager: the whole square, ~9 bytes per element measured with SmolLM2-135M, 2 x 512 tokens, bf16
    (scores, fp32 softmax, its copy), and the dropout mask with attention dropout. Our masked
    fallback: one compute-dtype copy of the probabilities and the mask. Ours on packed rows: one
    compute-dtype copy of each example's causal block, at worst (train/attention.py)."""
    square = cfg.max_len**2
    if path == "eager":
        return d.heads * square * (EAGER_BYTES + (1 if d.attention_dropout else 0))
    if path == "sdpa":
        return ALLOCATOR_SLACK * compute_bytes * square
    if path == "masked":
        return ALLOCATOR_SLACK * compute_bytes * (d.heads + 1) * square
    return ALLOCATOR_SLACK * compute_bytes * d.heads * kept_probabilities(cfg.max_len)
