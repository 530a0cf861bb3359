"""Int4 weight-only decode for GGUF Q4_1 checkpoints on CPU (the CPU engine's fast path).

Why: decoding a few tokens per step on CPU is bound by streaming the weights from memory;
the dequantized bf16 weights of the default model are ~210 MB per step. torch's CPU int4
kernel (`_weight_int4pack_mm_for_cpu`, groups of 32) reads a quarter of that. Measured on
this machine (2 cores, all 210 layer matmuls of SmolLM2-135M): 1 row 31 -> 8 ms, 8 rows
34 -> 19 ms, 12 rows 32 -> 25 ms, 16 rows 27 -> 32 ms. The kernel works row by row, so past
~12 rows (prefill chunks) the bf16 GEMM is faster: each swapped layer keeps both and picks
by row count (`MAX_INT4_ROWS`).

Exactness: a Q4_1 block is 32 weights `w = d * q + m` (q in 0..15, d and m fp16). The int4
pack dequantizes `(q - 8) * scale + zero`, so scale = d and zero = m + 8 d reproduce the file's
weights exactly (up to rounding d and zero to the activation dtype). No re-quantization.

Protocol: read the GGUF with `gguf.GGUFReader`; for each llama-style layer linear
(`blk.N.attn_q|attn_k|attn_v|attn_output|ffn_gate|ffn_up|ffn_down`) stored as Q4_1, find the
row order transformers loaded it in (identity, or llama.cpp's q/k rotary permutation undone
with the head count), check the dequantized rows against the loaded weight, and only then
swap the module. Anything else (another quant type, an unknown row order, other
architectures) keeps its plain `nn.Linear`.
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .cpu_native import GROUP, TORCH_MAX_ROWS, Q41Kernel, pack_q4_1  # GROUP: the Q4_1 block

log = logging.getLogger(__name__)

MAX_INT4_ROWS = 12
Q4_1_BLOCK_BYTES = 20  # fp16 d, fp16 m, 16 bytes of nibbles
_MODULES = {  # GGUF tensor suffix -> HF module path inside model.layers.N
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}


class Int4DecodeLinear(nn.Module):
    """A Linear over the file's Q4_1 weights: each call picks the fastest kernel for its row count.

    torch's int4 kernel for few rows, the native AMX kernel (`cpu_native`, when loaded) above
    `cpu_native.TORCH_MAX_ROWS`, else torch's int4 up to `MAX_INT4_ROWS` and the bf16 GEMM beyond.
    With the native kernel (bf16 models only) the two int4 kernels cover every row count, so the
    dense bf16 weight is dropped (about 210 MB for the default model).
    """

    def __init__(self, linear: nn.Linear, packed: torch.Tensor, scales_zeros: torch.Tensor,
                 native: tuple | None = None) -> None:
        super().__init__()
        if native is not None and linear.weight.dtype != torch.bfloat16:
            raise ValueError("the native kernel multiplies bf16 activations only")
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight = linear.weight if native is None else None
        self.bias = linear.bias
        self.register_buffer("packed", packed, persistent=False)
        self.register_buffer("scales_zeros", scales_zeros, persistent=False)
        self.native = native  # (cpu_native.Q41Kernel, cpu_native.PackedQ41) or None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.numel() // self.in_features
        if x.dtype != self.scales_zeros.dtype:
            if self.weight is None:  # no dense copy: compute in the weights' dtype
                return self.forward(x.to(self.scales_zeros.dtype)).to(x.dtype)
            return F.linear(x, self.weight, self.bias)
        flat = x.reshape(rows, self.in_features).contiguous()
        if self.native is not None and rows > TORCH_MAX_ROWS:
            kernel, weights = self.native
            out = kernel.mm(flat, weights)
        elif rows <= MAX_INT4_ROWS:
            out = torch._weight_int4pack_mm_for_cpu(flat, self.packed, GROUP, self.scales_zeros)
        else:
            return F.linear(x, self.weight, self.bias)
        out = out.reshape(*x.shape[:-1], self.out_features)
        return out if self.bias is None else out + self.bias


def install_int4_decode(model: nn.Module, gguf_path: Path, kernel: "Q41Kernel | None" = None) -> int:
    """Swap the Q4_1 layer linears of a GGUF-loaded llama-style model; returns how many.

    With `kernel` (a loaded `cpu_native.Q41Kernel`) the layers also get its packing."""
    if not hasattr(torch, "_weight_int4pack_mm_for_cpu") or model.device.type != "cpu":
        return 0
    from gguf import GGUFReader

    config = model.config
    heads = (config.num_attention_heads, getattr(config, "num_key_value_heads", None) or config.num_attention_heads)
    layers = getattr(getattr(model, "model", None), "layers", None)
    if layers is None:
        return 0
    swapped = 0
    for tensor in GGUFReader(str(gguf_path)).tensors:
        target = _target(tensor.name, layers)
        if target is None or tensor.tensor_type.name != "Q4_1":
            continue
        parent, attr, linear = target
        built = _pack(tensor, linear, heads)
        if built is not None:
            packed, scales_zeros, (q, d, m) = built
            native = pack_q4_1(q, d, m) if kernel is not None and linear.weight.dtype == torch.bfloat16 else None
            setattr(parent, attr, Int4DecodeLinear(linear, packed, scales_zeros,
                                                   (kernel, native) if native is not None else None))
            swapped += 1
    return swapped


def _target(name: str, layers) -> tuple[nn.Module, str, nn.Linear] | None:
    parts = name.split(".")  # blk.N.<kind>.weight
    if len(parts) != 4 or parts[0] != "blk" or parts[3] != "weight" or parts[2] not in _MODULES:
        return None
    index = int(parts[1])
    if index >= len(layers):
        return None
    parent_path, attr = _MODULES[parts[2]].split(".")
    parent = getattr(layers[index], parent_path, None)
    linear = getattr(parent, attr, None)
    return (parent, attr, linear) if isinstance(linear, nn.Linear) else None


def _pack(tensor, linear: nn.Linear, heads: tuple[int, int]) -> tuple | None:
    """(torch int4 pack, its scales/zeros, (q, d, m) in the loaded row order) or None."""
    n, k = linear.out_features, linear.in_features
    raw = torch.from_numpy(tensor.data.copy()).view(torch.uint8)
    if k % GROUP or raw.numel() != n * (k // GROUP) * Q4_1_BLOCK_BYTES:
        return None
    blocks = raw.reshape(n, k // GROUP, Q4_1_BLOCK_BYTES)
    d16 = blocks[..., 0:2].contiguous().view(torch.float16).squeeze(-1)  # [n, k/32]
    m16 = blocks[..., 2:4].contiguous().view(torch.float16).squeeze(-1)
    nibbles = blocks[..., 4:].to(torch.int32)
    q = torch.cat([nibbles & 0xF, nibbles >> 4], dim=-1)  # [n, k/32, 32]: low nibbles first
    reference = linear.weight.detach().float()
    tolerance = 2 ** -7 * float(reference.abs().max())
    for order in _row_orders(n, heads):
        qo, do16, mo16 = (t[order] for t in (q, d16, m16)) if order is not None else (q, d16, m16)
        do, mo = do16.float(), mo16.float()
        weights = (qo.float() * do[..., None] + mo[..., None]).reshape(n, k)
        if torch.allclose(weights, reference, rtol=2 ** -7, atol=tolerance):
            packed = torch._convert_weight_to_int4pack_for_cpu(qo.reshape(n, k).contiguous(), 1)
            scales_zeros = torch.stack([do.t(), (mo + 8 * do).t()], dim=-1)  # [k/32, n, 2]
            return packed, scales_zeros.to(linear.weight.dtype).contiguous(), (qo, do16, mo16)
    log.warning("int4 decode: %s does not match the loaded weights; kept in %s", tensor.name, linear.weight.dtype)
    return None


def _row_orders(n: int, heads: tuple[int, int]) -> list[torch.Tensor | None]:
    """Identity, then llama.cpp's q/k rotary row permutation undone for each head count."""
    orders: list[torch.Tensor | None] = [None]
    for h in dict.fromkeys(heads):
        if h and n % (2 * h) == 0:
            orders.append(torch.arange(n).reshape(h, n // h // 2, 2).transpose(1, 2).reshape(n))
    return orders
