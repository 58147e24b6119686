"""The operators of one decoder step on one tensor-parallel device, besides attention: plain data.

The list follows a plain PyTorch decoder, op by op, as ``sims/validation/model_step.py`` runs it
(one kernel per op unless ``kernels`` says otherwise): the rotation table once per step (4), then per
layer RMSNorm (one fused kernel on CUDA), fused QKV projection (bias in the epilogue), RoPE on q and k
in fp32 (3 kernels each: cast, complex multiply, cast back), K/V cache append
(2), attention (timed by the attention model), output projection, all-reduce (tensor parallel),
residual add, RMSNorm, fused gate+up projection, SiLU and multiply (2), down projection,
all-reduce, residual add; then the final norm, the LM head on each sequence's last position, and
a greedy argmax. Megatron-style tensor parallelism: QKV and gate/up split by columns (heads), O
and down by rows, one all-reduce after each; KV heads are split, or replicated when fewer than
the devices; the LM head is split by vocabulary rows.
"""

from __future__ import annotations

from dataclasses import dataclass

from topθ_hw.cost.models import ModelShape
from topθ_hw.errors import UserError

BF16 = 2


@dataclass(frozen=True)
class Op:
    """One operator on one device: HBM bytes, FLOPs, kernels launched."""
    name: str
    kind: str               # "gemm", "elementwise", "allreduce" (attention is timed separately)
    bytes: float = 0.0
    matrix_flops: float = 0.0
    vector_flops: float = 0.0
    kernels: int = 1
    comm_bytes: float = 0.0  # all-reduce payload per device
    devices: int = 1         # all-reduce: devices in the group


def heads_per_device(model: ModelShape, tp: int) -> tuple[int, int]:
    """(query heads, KV heads) on one of ``tp`` devices; KV heads replicate when fewer than ``tp``."""
    if model.q_heads % tp:
        raise UserError(f"--tp {tp} does not divide model {model.name}'s {model.q_heads} query heads")
    if model.kv_heads % tp and tp % model.kv_heads:
        raise UserError(f"--tp {tp} neither divides nor is a multiple of {model.name}'s {model.kv_heads} KV heads")
    if model.intermediate_size % tp:
        raise UserError(f"--tp {tp} does not divide {model.name}'s MLP width {model.intermediate_size}")
    return model.q_heads // tp, max(1, model.kv_heads // tp)


def gemm(name: str, rows: int, k: int, n: int, weight_scale: float = 1.0) -> Op:
    """[rows, k] @ [k, n] in bf16: weights, input and output each cross HBM once."""
    return Op(name, "gemm", bytes=BF16 * (k * n * weight_scale + rows * k + rows * n),
              matrix_flops=2.0 * rows * k * n)


def elementwise(name: str, elements_in: float, elements_out: float, kernels: int = 1,
                flops_per_element: float = 1.0) -> Op:
    return Op(name, "elementwise", bytes=BF16 * (elements_in + elements_out),
              vector_flops=flops_per_element * elements_out, kernels=kernels)


def rope(elements: float) -> Op:
    """RoPE on q and k as model_step.py runs it, in fp32 (3 kernels each: cast up, complex multiply,
    cast back): 2+4, 4+4 and 4+2 bytes per element (the rotation table is shared by every layer)."""
    return Op("rope", "elementwise", bytes=20.0 * elements, vector_flops=6.0 * elements, kernels=6)


def rotations(positions: int, head_dim: int) -> Op:
    """The step's rotation table e^(i·pos·f) [positions, d/2], once per step (4 kernels): positions
    to fp32 (8 + 4 bytes a position), times the frequencies (4 + 4 an entry), ones_like (4), polar
    (8 + 8)."""
    entries = positions * head_dim / 2
    return Op("rotations", "elementwise", bytes=12.0 * positions + 28.0 * entries, vector_flops=4.0 * entries,
              kernels=4)


def allreduce(name: str, rows: int, width: int, tp: int) -> list[Op]:
    payload = BF16 * rows * width
    return [Op(name, "allreduce", comm_bytes=payload, bytes=2 * payload, devices=tp)] if tp > 1 else []


def layer_ops(model: ModelShape, tokens: int, tp: int) -> tuple[list[Op], list[Op]]:
    """(ops before attention, ops after attention) of one layer for ``tokens`` new tokens."""
    qh, kvh = heads_per_device(model, tp)
    h, d, inner = model.hidden_size, model.head_dim, model.intermediate_size // tp
    q, kv = qh * d, kvh * d
    extra_norms = model.norms_per_layer - 2
    before = [elementwise("norm", tokens * h, tokens * h, flops_per_element=4),
              gemm("qkv_proj", tokens, h, q + 2 * kv),
              rope(tokens * (q + kv)),
              elementwise("kv_append", tokens * 2 * kv, tokens * 2 * kv, kernels=2)]
    after = [gemm("o_proj", tokens, q, h), *allreduce("allreduce_attn", tokens, h, tp),
             elementwise("residual_add", 2 * tokens * h, tokens * h),
             elementwise("norm", tokens * h, tokens * h, flops_per_element=4)]
    if extra_norms:  # Gemma 3: post-attention / pre- and post-feedforward norms, q/k norms
        after.append(elementwise("extra_norms", extra_norms * tokens * h, extra_norms * tokens * h,
                                 kernels=extra_norms, flops_per_element=4))
    up = 2 * inner if model.mlp == "gated" else inner
    after += [gemm("gate_up_proj", tokens, h, up),
              elementwise("act_mul", 3 * tokens * inner, 2 * tokens * inner, kernels=2 if model.mlp == "gated" else 1,
                          flops_per_element=8),
              gemm("down_proj", tokens, inner, h), *allreduce("allreduce_mlp", tokens, h, tp),
              elementwise("residual_add", 2 * tokens * h, tokens * h)]
    return before, after


def model_head_ops(model: ModelShape, tokens: int, sequences: int, tp: int) -> tuple[list[Op], list[Op]]:
    """(embedding lookup, final norm + LM head + argmax): logits for each sequence's last token."""
    h, vocab = model.hidden_size, -(-model.vocab_size // tp)
    first = [elementwise("embed", tokens * h, tokens * h, flops_per_element=0),
             rotations(tokens // sequences, model.head_dim)]
    last = [elementwise("final_norm", sequences * h, sequences * h, flops_per_element=4),
            gemm("lm_head", sequences, h, vocab),
            *allreduce("gather_logits", sequences, vocab, tp),
            elementwise("argmax", sequences * vocab, sequences, flops_per_element=0)]
    return first, last


def weight_bytes_per_device(model: ModelShape, tp: int) -> float:
    """Weights one device holds: layers and LM head split, embedding table replicated when untied."""
    embed = model.vocab_size * model.hidden_size * BF16
    layers = model.layers * model.layer_parameters() * BF16 / tp
    return layers + embed / tp + (0 if model.tied_embeddings else embed) + model.hidden_size * BF16
