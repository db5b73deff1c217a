"""Several trained networks as one: the mean of their heatmaps, decoded once.

Averaging heatmaps (not coordinates) keeps each member's uncertainty: a member
unsure between two peaks pulls the mean map less than a confident one, and the
sub-pixel decoder then fits one peak to the consensus.
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
