"""Vision Transformer localizer: the localizer's task solved by self-attention over image patches.

Follows the course's attention block and Dosovitskiy et al. 2021 (ViT): the 48x60 grey image is cut
into patches (a strided convolution), a learned class token is prepended, learned position
embeddings are added, and a stack of transformer blocks mixes the tokens. The class token's final
state feeds the localizer's head (p_c logit, box logits, class logits), so the family reuses the
localizer's targets, loss, evaluator, fitness and decoder (:class:`VitSpec` subclasses
:class:`edgedet.models.localizer.LocalizerSpec`).

Each block is the Pre-LN layer of Xiong et al. 2020 ("On Layer Normalization in the Transformer
Architecture")::

    x = x + Dropout(MHSA(LN(x)))
    x = x + MLP(LN(x))              MLP = Linear, GELU, Dropout, Linear, Dropout

with the original Post-LN order (``x = LN(x + MHSA(x))``, ``x = LN(x + MLP(x))``) behind
``norm_first=False``. Pre-LN stacks end with a final LayerNorm before the head (the residual stream
is otherwise never normalised); Post-LN stacks already end normalised and have none.

Decisions where the course is silent:

- Attention is written out (:class:`MultiHeadSelfAttention`: separate query, key and value
  projections, ``softmax(Q K^T / sqrt(d)) V``), the same computation as
  ``nn.MultiheadAttention(batch_first=True)`` called as ``attn(x, x, x, need_weights=False)[0]``
  (it takes query, key and value and returns a tuple; a test holds the two equal). Traced by
  edgedet's ONNX exporter (TorchScript-based ``torch.onnx.export``) it is plain MatMul / Add /
  Reshape / Transpose / Div / Softmax, which ONNX Runtime's transformer optimizer
  (``onnxruntime.transformers.optimizer``, model type ``vit``) fuses into one ``Attention``
  contrib operator per block, Pre-LN and Post-LN alike; ``tests/models/test_vit.py`` checks the
  fusion and the fused graph's parity. ONNX Runtime's session-level optimisation (what ``edgedet
  run`` uses) fuses the LayerNorms, GELU and MatMuls of these blocks but not the attention itself.
- Default size (dim 64, depth 4, 4 heads, MLP ratio 2, 0.14M parameters): small enough to train on a
  shared 2-core CPU. The default patch embedding is the plain one; the shipped checkpoint adds
  ``stem_channels=32``: on ``digits-loc`` a first plain run (lr 0.002) kept its class loss at
  chance for the four epochs it was given, while the stem run (lr 0.001) broke away at epoch 4;
  two things changed, so this is a lead, not a controlled result (``benchmarks/results/vit.md``).
- Patch size 6 by default: 48x60 tiles into 8x10 = 80 tokens (plus the class token). A patch size
  that does not tile the input is a :class:`ModelError`.
- Position embeddings are learned for the config's token grid and stored as a grid
  ``[1, D, rows, cols]``. An input of another size (a multiple of the patch size) gets them resized
  bicubically on the 2-D grid in ``forward``; a checkpoint loaded into a model built for another
  input size (``edgedet export --imgsz 96,120``) has them resized the same way on loading. The
  class token has no position embedding of its own (it would only add to a learned vector). Each
  exported graph takes one size (``fixed_input``, as the localizer): the decoder turns the box,
  relative to the input, into pixels of the config's size.
- The class token's final state alone feeds the head (after the final LayerNorm in Pre-LN).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edgedet.errors import ModelError
from edgedet.models.layers import check_common_config
from edgedet.models.localizer import DIGITS, LocalizerSpec
from edgedet.models.registry import register_model

__all__ = ["VitConfig", "VitLocalizer", "VitBlock", "MultiHeadSelfAttention", "VitSpec", "resize_pos_embed"]


@dataclass(frozen=True)
class VitConfig:
    in_channels: int = 1
    num_classes: int = 10
    input_size: tuple[int, int] = (48, 60)
    patch_size: int = 6
    stem_channels: int = 0  # > 0: a convolution stem of this width before the patches
    stem_depth: int = 1  # 3x3 convolutions in the stem, the first with stride 2
    dim: int = 64
    depth: int = 4
    heads: int = 4
    mlp_ratio: float = 2.0
    dropout: float = 0.0  # after attention and in the MLP (the course block's Dropout layers)
    norm_first: bool = True  # Pre-LN (Xiong et al. 2020); False: the original Post-LN order
    class_names: tuple[str, ...] = DIGITS

    def validate(self) -> None:
        check_common_config(self, ModelError)
        if self.patch_size < 1:
            raise ModelError(f"patch_size must be >= 1, got {self.patch_size}")
        h, w = self.input_size
        if h % self.patch_size or w % self.patch_size:
            raise ModelError(f"patch_size {self.patch_size} does not tile input_size {tuple(self.input_size)}; "
                             f"height and width must be multiples of it")
        if self.stem_channels < 0:
            raise ModelError(f"stem_channels must be >= 0, got {self.stem_channels}")
        if self.stem_depth < 1:
            raise ModelError(f"stem_depth must be >= 1, got {self.stem_depth}")
        if self.stem_channels and self.patch_size % 2:
            raise ModelError(f"a convolution stem (stride 2) needs an even patch_size, got {self.patch_size}")
        if self.depth < 1:
            raise ModelError(f"depth must be >= 1, got {self.depth}")
        if self.heads < 1 or self.dim < 1 or self.dim % self.heads:
            raise ModelError(f"dim {self.dim} must be a positive multiple of heads {self.heads}")
        if self.mlp_ratio <= 0:
            raise ModelError(f"mlp_ratio must be > 0, got {self.mlp_ratio}")
        if not 0.0 <= self.dropout < 1.0:
            raise ModelError(f"dropout must be in [0, 1), got {self.dropout}")

    @property
    def grid(self) -> tuple[int, int]:
        """Token grid ``(rows, cols)`` of the config's input size."""
        return self.input_size[0] // self.patch_size, self.input_size[1] // self.patch_size


def resize_pos_embed(pos: Tensor, grid: tuple[int, int]) -> Tensor:
    """Resize grid position embeddings to another token grid, bicubically on the 2-D grid.

    Args:
        pos (Tensor[1, D, gh, gw]): embeddings of a ``gh x gw`` token grid.
        grid: the ``(rows, cols)`` wanted.
    Returns:
        Tensor[1, D, rows, cols]; ``pos`` itself when the grids match.
    """
    if tuple(pos.shape[-2:]) == tuple(grid):
        return pos
    return F.interpolate(pos, size=tuple(grid), mode="bicubic", align_corners=False)


def patch_embedding(cfg: VitConfig) -> nn.Module:
    """Image ``[B, C, H, W]`` -> token grid ``[B, D, H / p, W / p]``.

    Plain ViT: one convolution with kernel = stride = patch size. With ``stem_channels``, a stem of
    ``stem_depth`` 3x3 convolutions with GELU comes first (the first with stride 2) and the
    patchifying convolution covers ``p / 2`` of its pixels: the hybrid ViT of Dosovitskiy et al.
    2021 (convolutional features as the patches) at a small scale, and Xiao et al. 2021 ("Early
    Convolutions Help Transformers See Better": a convolutional stem makes ViTs train faster and
    less sensitive to the learning rate).
    """
    if not cfg.stem_channels:
        return nn.Conv2d(cfg.in_channels, cfg.dim, cfg.patch_size, stride=cfg.patch_size)
    layers: list[nn.Module] = []
    channels = cfg.in_channels
    for i in range(cfg.stem_depth):
        layers += [nn.Conv2d(channels, cfg.stem_channels, 3, stride=2 if i == 0 else 1, padding=1), nn.GELU()]
        channels = cfg.stem_channels
    half = cfg.patch_size // 2
    return nn.Sequential(*layers, nn.Conv2d(channels, cfg.dim, half, stride=half))


class VitMlp(nn.Sequential):
    """The course block's MLP: Linear, GELU, Dropout, Linear, Dropout."""

    def __init__(self, dim: int, hidden: int, dropout: float) -> None:
        super().__init__(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim),
                         nn.Dropout(dropout))


class MultiHeadSelfAttention(nn.Module):
    """Multi-head self-attention, ``softmax(Q K^T / sqrt(d)) V`` per head, written out.

    The same computation as ``nn.MultiheadAttention(dim, heads, batch_first=True)`` called as
    ``attn(x, x, x, need_weights=False)[0]`` (``tests/models/test_vit.py`` checks that with copied
    weights), with separate query, key and value projections. Why not that module itself: in eval
    mode it takes PyTorch's fused fast path (``aten::_native_multi_head_attention``), which the
    TorchScript-based ONNX exporter cannot export, and its packed in-projection would export as one
    MatMul and a Split that ONNX Runtime's attention fusion does not recognise. Written out, the
    graph is MatMul / Add / Reshape / Transpose / Div / Softmax, the pattern ONNX Runtime's
    transformer optimizer fuses into one ``Attention`` operator.
    """

    def __init__(self, dim: int, heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.query, self.key, self.value = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.attn_drop = nn.Dropout(dropout)
        self.proj = nn.Linear(dim, dim)

    def _split_heads(self, x: Tensor) -> Tensor:
        b, t, _ = x.shape
        return x.reshape(b, t, self.heads, self.head_dim).permute(0, 2, 1, 3)  # (B, nh, T, hd)

    def forward(self, x: Tensor) -> Tensor:  # x: (B, T, D)
        b, t, d = x.shape
        q, k, v = self._split_heads(self.query(x)), self._split_heads(self.key(x)), self._split_heads(self.value(x))
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.head_dim)  # (B, nh, T, T)
        weights = self.attn_drop(torch.softmax(scores, dim=-1))
        out = torch.matmul(weights, v).permute(0, 2, 1, 3).reshape(b, t, d)  # (B, T, D)
        return self.proj(out)


class VitBlock(nn.Module):
    """One transformer layer; ``norm_first`` picks Pre-LN (True) or Post-LN (False), see the module."""

    def __init__(self, dim: int, heads: int, mlp_hidden: int, dropout: float, norm_first: bool) -> None:
        super().__init__()
        self.norm_first = norm_first
        self.norm1 = nn.LayerNorm(dim)
        self.attn = MultiHeadSelfAttention(dim, heads, dropout)
        self.drop = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = VitMlp(dim, mlp_hidden, dropout)

    def _attend(self, x: Tensor) -> Tensor:
        return self.drop(self.attn(x))

    def forward(self, x: Tensor) -> Tensor:  # x: (B, T, D)
        if self.norm_first:
            x = x + self._attend(self.norm1(x))
            return x + self.mlp(self.norm2(x))
        x = self.norm1(x + self._attend(x))
        return self.norm2(x + self.mlp(x))


class VitLocalizer(nn.Module):
    """``forward(x[B, C, H, W]) -> Tensor[B, 5 + num_classes]``: p_c logit, box logits, class logits.

    ``H`` and ``W`` must be multiples of the patch size; other sizes than the config's get resized
    position embeddings (see :func:`resize_pos_embed`).
    """

    def __init__(self, cfg: VitConfig) -> None:
        super().__init__()
        self.cfg = cfg
        gh, gw = cfg.grid
        self.patch_embed = patch_embedding(cfg)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.dim))
        # Kept as a grid (1, D, rows, cols) so a checkpoint carries the grid it was learned for. The
        # class token has no separate position embedding: it would only add to a learned vector.
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.dim, gh, gw))
        mlp_hidden = max(1, round(cfg.dim * cfg.mlp_ratio))
        self.blocks = nn.Sequential(*(VitBlock(cfg.dim, cfg.heads, mlp_hidden, cfg.dropout, cfg.norm_first)
                                      for _ in range(cfg.depth)))
        self.norm = nn.LayerNorm(cfg.dim) if cfg.norm_first else nn.Identity()
        self.head = nn.Linear(cfg.dim, 5 + cfg.num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        # ViT's initialisation: truncated-normal(0.02) embeddings and Linear weights, zero biases.
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        for m in self.patch_embed.modules():
            if isinstance(m, nn.Conv2d):
                fan_in = m.in_channels * m.kernel_size[0] * m.kernel_size[1]
                nn.init.trunc_normal_(m.weight, std=math.sqrt(1.0 / fan_in))
                nn.init.zeros_(m.bias)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        # A checkpoint learned for another input size: resize its grid of position embeddings to
        # this model's (what loading a 48x60 checkpoint into a model built for --imgsz 96,120 needs).
        key = prefix + "pos_embed"
        pos = state_dict.get(key)
        if isinstance(pos, Tensor) and pos.ndim == 4 and pos.shape[:2] == self.pos_embed.shape[:2]:
            state_dict[key] = resize_pos_embed(pos, self.cfg.grid)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, x: Tensor) -> Tensor:
        p = self.cfg.patch_size
        grid = (x.shape[-2] // p, x.shape[-1] // p)
        tokens = self.patch_embed(x).flatten(2).transpose(1, 2)  # (B, rows * cols, D)
        pos = resize_pos_embed(self.pos_embed, grid).flatten(2).transpose(1, 2)  # (1, rows * cols, D)
        # Position embeddings are added before the class token is joined (the same sum): the first
        # block's residual input is then a Concat, not an Add that ONNX Runtime's attention fusion
        # would mistake for the attention output's bias Add.
        cls = self.cls_token.expand(tokens.shape[0], -1, -1)  # (B, 1, D)
        tokens = torch.cat([cls, tokens + pos], dim=1)  # (B, 1 + rows * cols, D)
        tokens = self.norm(self.blocks(tokens))
        return self.head(tokens[:, 0])  # (B, 5 + C)


class VitSpec(LocalizerSpec):
    """The localizer's task (targets, loss, evaluator, fitness, decoder) with a ViT network.

    ``lr`` 1e-3: AdamW at batch 64; transformers want a lower peak than the convolutional localizer.
    """

    family = "vit"
    summary = "Vision Transformer localizer (Pre-LN attention blocks, class token) on digits-loc"
    lr = 1e-3
    fully_conv = False  # attention over all tokens has no convolutional equivalent (unlike the CNN head)

    def size_multiple(self, cfg: VitConfig) -> int:
        return cfg.patch_size


@register_model("vit", spec=VitSpec(), config=VitConfig())
def vit(cfg: VitConfig) -> VitLocalizer:
    return VitLocalizer(cfg)
