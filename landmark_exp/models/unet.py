"""The seed's U-Net, to the letter of its spec: 4 down blocks (two 3x3 conv + BN + ReLU, then 2x2 max-pool)
of 64/128/256/512 filters; bottleneck Conv(1024) + ReLU + BN + Conv(1024) + BN; 4 up blocks (up-sample,
concatenate the skip, two conv + BN + ReLU) of 512/256/128/64; a 1x1 conv with sigmoid. `widths` scales it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def _double_conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class UNet(nn.Module):
    def __init__(self, in_channels: int = 1, out_channels: int = 19,
                 widths: Sequence[int] = (64, 128, 256, 512), bottleneck: int | None = None,
                 upsample: str = "transpose", activation: str | None = "sigmoid",
                 head_bias: float | None = None) -> None:
        super().__init__()
        widths = list(widths)
        bottleneck = bottleneck or 2 * widths[-1]
        self.out_channels = out_channels
        self.down = nn.ModuleList(_double_conv(cin, w)
                                  for cin, w in zip([in_channels, *widths[:-1]], widths, strict=True))
        self.pool = nn.MaxPool2d(2)
        # The spec's bottleneck: Conv + ReLU + BN + Conv + BN (note: ReLU before BN, no final ReLU).
        self.bottleneck = nn.Sequential(
            nn.Conv2d(widths[-1], bottleneck, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.BatchNorm2d(bottleneck),
            nn.Conv2d(bottleneck, bottleneck, 3, padding=1),
            nn.BatchNorm2d(bottleneck),
        )
        ups = widths[::-1]
        self.up, self.up_conv = nn.ModuleList(), nn.ModuleList()
        for cin, w in zip([bottleneck, *ups[:-1]], ups, strict=True):  # in turn: init draws in this order
            if upsample == "transpose":
                self.up.append(nn.ConvTranspose2d(cin, w, 2, stride=2))
            elif upsample == "bilinear":
                self.up.append(nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear"), nn.Conv2d(cin, w, 1)))
            else:
                raise ValueError(f"upsample must be 'transpose' or 'bilinear', not {upsample!r}")
            self.up_conv.append(_double_conv(2 * w, w))
        self.head = nn.Conv2d(widths[0], out_channels, 1)
        if head_bias is not None:  # a prior on the output, set after the draws: the other weights stay the same
            nn.init.constant_(self.head.bias, head_bias)
        if activation not in ("sigmoid", None, "none"):
            raise ValueError(f"activation must be 'sigmoid' or None, not {activation!r}")
        self.activation = activation if activation == "sigmoid" else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottleneck(x)
        for up, conv, skip in zip(self.up, self.up_conv, reversed(skips), strict=True):
            x = up(x)
            if x.shape[-2:] != skip.shape[-2:]:  # odd input sizes: pad to the skip's size
                dy, dx = skip.shape[-2] - x.shape[-2], skip.shape[-1] - x.shape[-1]
                x = nn.functional.pad(x, (dx // 2, dx - dx // 2, dy // 2, dy - dy // 2))
            x = conv(torch.cat([skip, x], dim=1))
        x = self.head(x)
        return torch.sigmoid(x) if self.activation == "sigmoid" else x
