"""Several trained networks as one: the mean of their heatmaps, decoded once; and the same for one network
over shifted copies of its input (test-time augmentation). Averaging heatmaps, not coordinates, keeps each
member's uncertainty: a member unsure between two peaks pulls the mean map less than a confident one.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class MeanOfNets(nn.Module):
    """Members with the same input and output shape; their outputs averaged (sigmoid heatmaps stay in [0, 1])."""

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = nn.ModuleList(members)
        self.out_channels = getattr(members[0], "out_channels", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.members[0](x)
        for member in self.members[1:]:
            out = out + member(x)
        return out / len(self.members)


def shift2d(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """(..., H, W) moved by (dy, dx) pixels, zeros shifted in (no wrap-around as torch.roll would give)."""
    if dy == 0 and dx == 0:
        return x
    h, w = x.shape[-2:]
    padded = nn.functional.pad(x, (max(dx, 0), max(-dx, 0), max(dy, 0), max(-dy, 0)))
    top, left = max(-dy, 0), max(-dx, 0)
    return padded[..., top : top + h, left : left + w]


class ShiftedMean(nn.Module):
    """Test-time augmentation by translation: the network run on the input shifted by each (dy, dx), each
    output shifted back, the maps averaged. Pooling makes a U-Net equivariant only to shifts of 2^depth
    pixels, so averaging smaller shifts smooths the coarse levels' aliasing out of the peak's position."""

    def __init__(self, net: nn.Module, shifts: Sequence[Sequence[int]]) -> None:
        super().__init__()
        self.net = net
        self.shifts = [(int(dy), int(dx)) for dy, dx in shifts]
        if not self.shifts:
            raise ValueError("test-time augmentation needs at least one shift")
        self.out_channels = getattr(net, "out_channels", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = None
        for dy, dx in self.shifts:
            y = shift2d(self.net(shift2d(x, dy, dx)), -dy, -dx)
            out = y if out is None else out + y
        return out / len(self.shifts)
