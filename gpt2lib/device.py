"""Pick the device a chapter runs on: a CUDA GPU when there is one (Colab), else Apple's MPS, else CPU."""

from __future__ import annotations

import torch


def get_device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")
