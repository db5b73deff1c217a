"""Any segmentation-models-pytorch architecture/encoder as a heatmap regressor. Weights default to None
(nothing downloads); `encoder_weights: imagenet` needs internet or a TORCH_HOME cache holding them.
"""

from __future__ import annotations

import segmentation_models_pytorch as smp
import torch
from torch import nn


class SMPModel(nn.Module):
    def __init__(self, arch: str = "Unet", encoder_name: str = "resnet34", encoder_weights: str | None = None,
                 in_channels: int = 1, out_channels: int = 19, activation: str | None = "sigmoid",
                 **kwargs) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.net = smp.create_model(arch, encoder_name=encoder_name, encoder_weights=encoder_weights,
                                    in_channels=in_channels, classes=out_channels, **kwargs)
        self.activation = activation if activation == "sigmoid" else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.net(x)
        return torch.sigmoid(x) if self.activation == "sigmoid" else x
