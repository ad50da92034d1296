"""The mini GPT-2 this project pretrained on Tiny Shakespeare, committed in the package."""

from __future__ import annotations

import copy
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from .config import GPTConfig
from .model import GPTModel
from .saving import load_model, load_model_config, save_model

MINI_NAME = "mini-shakespeare"
MINI_CONFIG = GPTConfig.mini()  # drop_rate 0.0: training used dropout (see the manifest)
PRETRAINED_DIR = Path(__file__).resolve().parent / "pretrained"


def save_mini(model: GPTModel, out_dir: str | os.PathLike, manifest: dict[str, Any]) -> Path:
    """Save a float16 copy of ``model`` without dropout, ``manifest`` as its ``extra``."""
    half = copy.deepcopy(model).to("cpu", torch.float16)
    half.cfg = replace(half.cfg, drop_rate=0.0)
    return save_model(half, out_dir, extra=manifest)


def read_manifest(path: str | os.PathLike | None = None) -> dict[str, Any]:
    """The manifest of the mini model saved in ``path`` (default: the committed one)."""
    directory = Path(path) if path is not None else PRETRAINED_DIR / MINI_NAME
    return load_model_config(directory)["extra"]


def load_mini(path: str | os.PathLike | None = None) -> GPTModel:
    """The mini GPT-2 (default: the committed one) as float32, in eval mode, checksum-checked."""
    directory = Path(path) if path is not None else PRETRAINED_DIR / MINI_NAME
    return load_model(directory).float().eval()
