"""A small transformer over image patches whose every block emits an image estimate: an
unrolled denoiser, for ``layer_descent`` constraints (arXiv 2601.17257).

    t     = patches(x)                              (T = (28/p)² tokens of p² pixels each)
    z_0   = W_in t + b_in + P                       (token embedding, learned positions P)
    z_l+1 = Block_l(z_l)                            (pre-norm attention + MLP, l = 0..L−1)
    x̂_l   = x + unpatch(head_l(LayerNorm_l(z_l+1))) (estimate after block l, (B, 28·28))

Every estimate is the noisy input plus a correction; the heads' weights and biases start at
zero, so every block's estimate starts as the input itself. ``shared_head`` uses one head
for every block (a "logit lens"); by default each block has its own, so a method whose
objective is the final estimate's loss alone (ERM) never trains the intermediate heads:
their estimates stay the noisy input and nothing orders them. The attention is written out
(no ``nn.MultiheadAttention`` fast path) so ``torch.func.vmap`` can run a pack of them.
No dropout and no batch norm: train and eval mode compute the same function.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from dualtune.core.tasks.readout_models import KeptReadouts


class AttentionBlock(nn.Module):
    """z ↦ z + Attn(LN(z)), then z ↦ z + MLP(LN(z)) (MLP d → 2d → d, GELU)."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"AttentionBlock width {width} is not a multiple of heads {heads}")
        self.heads = heads
        self.norm_attention = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.norm_mlp = nn.LayerNorm(width)
        self.mlp = nn.Sequential(
            nn.Linear(width, 2 * width), nn.GELU(), nn.Linear(2 * width, width)
        )

    def forward(self, z: Tensor) -> Tensor:
        batch, tokens, width = z.shape
        head_width = width // self.heads
        qkv = self.qkv(self.norm_attention(z)).reshape(batch, tokens, 3, self.heads, head_width)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, heads, T, head_width)
        weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(head_width), dim=-1)
        mixed = (weights @ v).transpose(1, 2).reshape(batch, tokens, width)
        z = z + self.proj(mixed)
        out: Tensor = z + self.mlp(self.norm_mlp(z))
        return out


def to_patches(x: Tensor, patch: int) -> Tensor:
    """(B, 1, H, W) or (B, H·W) square images → (B, T, p²) non-overlapping p×p patches in
    row-major order."""
    batch = x.shape[0]
    side = math.isqrt(x[0].numel())
    grid = side // patch
    tiles = x.reshape(batch, grid, patch, grid, patch).permute(0, 1, 3, 2, 4)
    return tiles.reshape(batch, grid * grid, patch * patch)


def from_patches(tokens: Tensor, patch: int) -> Tensor:
    """The inverse of ``to_patches``, flattened: (B, T, p²) → (B, H·W)."""
    batch, count = tokens.shape[0], tokens.shape[1]
    grid = math.isqrt(count)
    tiles = tokens.reshape(batch, grid, grid, patch, patch).permute(0, 1, 3, 2, 4)
    return tiles.reshape(batch, grid * patch * grid * patch)


class ReadoutTransformer(KeptReadouts):
    """Patch transformer of ``blocks`` blocks with an image estimate after each block.

    Args:
        image_size: side of the square grey input images (28).
        patch: side of a patch; must divide ``image_size``.
        width: token width d (a multiple of ``heads``).
        heads: attention heads per block.
        blocks: number of blocks L (and of estimates).
        shared_head: one head for every block instead of one per block.
    """

    def __init__(
        self,
        image_size: int,
        patch: int,
        width: int,
        heads: int,
        blocks: int,
        *,
        shared_head: bool = False,
    ) -> None:
        super().__init__()
        for name, value in (
            ("image_size", image_size),
            ("patch", patch),
            ("width", width),
            ("heads", heads),
            ("blocks", blocks),
        ):
            if value < 1:
                raise ValueError(f"ReadoutTransformer {name} must be ≥ 1, got {value}")
        if image_size % patch:
            raise ValueError(
                f"ReadoutTransformer patch {patch} does not divide image_size {image_size}"
            )
        self.patch = patch
        tokens = (image_size // patch) ** 2
        self.embed = nn.Linear(patch * patch, width)
        self.position = nn.Parameter(0.02 * torch.randn(1, tokens, width))
        self.blocks = nn.ModuleList(AttentionBlock(width, heads) for _ in range(blocks))
        self.heads = nn.ModuleList(
            self._zero_head(width, patch * patch) for _ in range(1 if shared_head else blocks)
        )

    @staticmethod
    def _zero_head(width: int, pixels: int) -> nn.Sequential:
        head = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, pixels))
        linear = head[1]
        assert isinstance(linear, nn.Linear)
        nn.init.zeros_(linear.weight)
        nn.init.zeros_(linear.bias)
        return head

    @property
    def num_readouts(self) -> int:
        return len(self.blocks)

    def forward_readouts(self, x: Tensor) -> Tensor:
        """The estimates after every block, stacked: (L, B, H·W); the last is
        ``forward(x)``."""
        tokens = to_patches(x, self.patch)
        z = self.embed(tokens) + self.position
        estimates = []
        for index, block in enumerate(self.blocks):
            z = block(z)
            head = self.heads[index if len(self.heads) > 1 else 0]
            estimates.append(from_patches(tokens + head(z), self.patch))
        return torch.stack(estimates)
