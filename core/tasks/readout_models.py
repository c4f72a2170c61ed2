"""A residual MLP with a readout after every block, for ``layer_descent`` constraints.

    z_0     = W_in x + b_in                          (input embedding, width d)
    z_{l+1} = z_l + MLP_l(LayerNorm_l(z_l))          (block l = 0..L−1; MLP: d → d → d, ReLU)
    r_l     = head(LayerNorm_out(z_{l+1}))           (readout after block l, logits (B, C))

The readout (final LayerNorm + linear head) is **shared** by every block, as in a "logit
lens" on the residual stream: the constraint then orders the representations themselves,
not L separately fitted heads, and the final readout is the usual classifier. The model has
no dropout or batch norm, so train and eval mode compute the same function.

``forward(x)`` returns the final readout r_{L−1}, so tasks, ERM and the metrics see an
ordinary classifier. When it runs with gradients enabled it also keeps the stacked readouts
(L, B, C) of that call; ``take_readouts(x, output)`` hands them to the constraint kind
exactly once (then drops them, so no graph outlives the step) and recomputes them only when
``output`` is not the tensor that call returned. Training thus needs one forward pass.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class ResidualBlock(nn.Module):
    """z ↦ z + W_2 ReLU(W_1 LayerNorm(z) + b_1) + b_2 (pre-norm, width preserved)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, width))

    def forward(self, z: Tensor) -> Tensor:
        out: Tensor = z + self.mlp(self.norm(z))
        return out


class KeptReadouts(nn.Module):
    """Base of the models with a readout after every block: subclasses implement
    ``forward_readouts`` (L, B, C) and ``num_readouts``. ``forward`` returns the final
    readout and, with gradients enabled, keeps the stacked readouts of that call for
    ``take_readouts`` (one forward pass per training step)."""

    def __init__(self) -> None:
        super().__init__()
        self._kept: tuple[Tensor, Tensor] | None = None

    @property
    def num_readouts(self) -> int:
        raise NotImplementedError

    def forward_readouts(self, x: Tensor) -> Tensor:
        """The readouts after every block, stacked: (L, B, C); the last is ``forward(x)``."""
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        readouts = self.forward_readouts(x)
        final = readouts[-1]
        # Keep the readouts of a training forward for ``take_readouts``; evaluation runs
        # under no_grad and keeps nothing.
        self._kept = (final, readouts) if torch.is_grad_enabled() else None
        return final

    def __getstate__(self) -> dict[str, object]:
        # A kept graph cannot be copied or pickled; it belongs to one training step.
        state = dict(self.__dict__)
        state["_kept"] = None
        return state

    def take_readouts(self, x: Tensor, output: Tensor) -> Tensor:
        """The stacked readouts (L, B, C) of the forward pass that returned ``output`` on
        ``x``: those kept by that call (differentiable, no second pass) when ``output`` is
        its result, else a fresh ``forward_readouts(x)``."""
        kept, self._kept = self._kept, None
        if kept is not None and kept[0] is output:
            return kept[1]
        return self.forward_readouts(x)


class ReadoutMLP(KeptReadouts):
    """Residual MLP of ``blocks`` blocks with a shared readout after each block.

    Args:
        in_features: input dimension.
        width: residual stream width d.
        blocks: number of residual blocks L (and of readouts).
        out_features: number of classes C.
    """

    def __init__(self, in_features: int, width: int, blocks: int, out_features: int) -> None:
        super().__init__()
        for name, value in (
            ("in_features", in_features),
            ("width", width),
            ("blocks", blocks),
            ("out_features", out_features),
        ):
            if value < 1:
                raise ValueError(f"ReadoutMLP {name} must be ≥ 1, got {value}")
        self.embed = nn.Linear(in_features, width)
        self.blocks = nn.ModuleList(ResidualBlock(width) for _ in range(blocks))
        self.norm_out = nn.LayerNorm(width)
        self.head = nn.Linear(width, out_features)

    @property
    def num_readouts(self) -> int:
        return len(self.blocks)

    def readout(self, z: Tensor) -> Tensor:
        """The shared readout of a residual-stream state."""
        out: Tensor = self.head(self.norm_out(z))
        return out

    def forward_readouts(self, x: Tensor) -> Tensor:
        """The readouts after every block, stacked: (L, B, C); the last is ``forward(x)``."""
        z = self.embed(x)
        readouts = []
        for block in self.blocks:
            z = block(z)
            readouts.append(self.readout(z))
        return torch.stack(readouts)
