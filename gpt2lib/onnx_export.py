"""Write a GPTModel, or a classifier built on one, to ONNX: for ONNX Runtime, e.g. on a web page."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from .files import atomic_path
from .model import GPTModel, eval_mode, hidden_and_attention


class _Exported(nn.Module):
    """What the ONNX file computes: the logits (of every position, or of the last), and with
    ``attention`` every layer's weights."""

    def __init__(self, model: GPTModel, attention: bool, last: bool) -> None:
        super().__init__()
        self.model, self.attention, self.last = model, attention, last

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        if self.attention:
            x, weights = hidden_and_attention(self.model, input_ids)  # (1, T, C), (L, 1, nh, T, T)
        else:
            x = self.model.hidden(input_ids)  # (1, T, C)
        logits = self.model.head(x[:, -1:] if self.last else x)  # (1, 1 or T, out)
        return (logits, weights) if self.attention else logits


def _store_smaller(proto: Any, weights: str, base: dict[str, torch.Tensor] | None) -> None:
    """Store the float32 weights in fewer bytes and restore them to float32 once, where the graph
    starts, so that the arithmetic stays float32. ``"float16"``: every weight rounded to float16;
    ``"float16-exact"``: only those float16 holds exactly; ``"int8"``: every matrix as int8 with a
    float32 scale per row (``w ~ q * s``, ``s = max|row| / 127``), the rest (biases, norms) as is;
    with ``base`` (initializer name -> tensor), a matrix is its base's in float16 plus such an
    int8 difference (``w ~ b + q * s``)."""
    import numpy as np
    import onnx
    from onnx import numpy_helper  # imported here: `import gpt2lib` does not need onnx

    graph, restore, scales = proto.graph, [], []
    for init in graph.initializer:
        if init.data_type != onnx.TensorProto.FLOAT:
            continue
        name, values = init.name, numpy_helper.to_array(init)
        if weights == "int8":
            if values.ndim != 2:
                continue
            ref = None
            if base is not None:
                if name not in base or tuple(base[name].shape) != values.shape:
                    raise ValueError(f"base has no weight {name} of shape {values.shape}")
                ref = base[name].detach().cpu().float().numpy().astype(np.float16)
                values = values - ref.astype(np.float32)
            scale = np.abs(values).max(axis=1, keepdims=True) / 127
            scale[scale == 0] = 1.0  # a row of zeros stays zeros
            q = np.clip(np.rint(values / scale), -127, 127).astype(np.int8)
            init.CopyFrom(numpy_helper.from_array(q, f"{name}.int8"))
            scales.append(numpy_helper.from_array(scale.astype(np.float32), f"{name}.scale"))
            scaled = name if ref is None else f"{name}.delta"
            restore += [
                onnx.helper.make_node("Cast", [init.name], [f"{name}.cast"], to=onnx.TensorProto.FLOAT),
                onnx.helper.make_node("Mul", [f"{name}.cast", f"{name}.scale"], [scaled]),
            ]
            if ref is not None:
                scales.append(numpy_helper.from_array(ref, f"{name}.base"))
                restore += [
                    onnx.helper.make_node("Cast", [f"{name}.base"], [f"{name}.base32"], to=onnx.TensorProto.FLOAT),
                    onnx.helper.make_node("Add", [f"{name}.base32", scaled], [name]),
                ]
            continue
        half = values.astype("float16")
        if weights == "float16-exact" and not (half.astype("float32") == values).all():
            continue
        init.CopyFrom(numpy_helper.from_array(half, f"{name}.float16"))
        restore.append(onnx.helper.make_node("Cast", [init.name], [name], to=onnx.TensorProto.FLOAT))
    graph.initializer.extend(scales)
    nodes = restore + list(graph.node)  # restored first, before any node reads a weight
    del graph.node[:]
    graph.node.extend(nodes)


def export_onnx(
    model: GPTModel, path: str | os.PathLike, *, attention: bool = False,
    positions: Literal["all", "last"] = "all",
    weights: Literal["float32", "float16", "float16-exact", "int8"] = "float32",
    base: GPTModel | None = None, opset: int = 18,
) -> Path:  # fmt: skip
    """Write ``model`` (float32, eval mode) to the ONNX file ``path``, atomically; return the path.

    Input ``input_ids`` (1, T) int64, any T up to the context length. Outputs ``logits``
    (1, T, vocab_size or num_classes), or with ``positions="last"`` those of the last position
    only (1, 1, ...: all that generation needs, at 1/T of the output layer's cost), and, with
    ``attention``, ``attention`` (n_layers, 1, nh, T, T) from the explicit attention path. A tied
    output layer shares the token embedding's single initializer. ``weights="float16"`` stores
    the weights in half the bytes, rounded, and computes in float32; ``"float16-exact"`` does so
    only for the weights float16 holds exactly (those of a model saved in float16, such as the
    mini GPT-2), and keeps the rest (e.g. LoRA adapters trained on top) in float32. ``"int8"``
    stores every matrix in 8 bits with a scale per row (a quarter of the bytes), rounded more
    coarsely: check the decoded tokens, not the logits. With ``base`` (int8 only), the model a
    fine-tuned ``model`` started from, each matrix is stored as the base's in float16 plus the
    int8 difference, which is small, so it rounds far less; a page that also runs the base can
    share those bytes (ONNX external data). Needs the
    ``onnx`` and ``onnxscript`` packages (``torch.onnx``'s exporter).
    """
    if not isinstance(model, GPTModel):
        raise TypeError(f"export_onnx needs a GPTModel, got {type(model).__name__}")
    if positions not in ("all", "last"):
        raise ValueError(f"positions must be 'all' or 'last', got {positions!r}")
    if weights not in ("float32", "float16", "float16-exact", "int8"):
        raise ValueError(
            f"weights must be 'float32', 'float16', 'float16-exact' or 'int8', got {weights!r}"
        )
    if base is not None and weights != "int8":
        raise ValueError(f"base needs weights='int8', got weights={weights!r}")
    import onnx

    first = next(model.parameters())
    if first.dtype != torch.float32:
        raise ValueError(f"export a float32 model (this one is {first.dtype}): call model.float()")
    wrapper = _Exported(model, attention, positions == "last")
    outputs = ["logits", "attention"] if attention else ["logits"]
    T = torch.export.Dim("T", min=1, max=model.cfg.context_length)
    example = torch.zeros(1, min(8, model.cfg.context_length), dtype=torch.long, device=first.device)
    with eval_mode(model), atomic_path(path) as tmp:
        wrapper.eval()  # the model too; eval_mode restores its mode afterwards
        program = torch.onnx.export(
            wrapper, (example,), dynamic_shapes={"input_ids": {1: T}}, input_names=["input_ids"],
            output_names=outputs, opset_version=opset, dynamo=True, verbose=False,
            optimize=False,  # constant folding would store a transposed copy of a small tied table
        )
        proto = program.model_proto
        for node in proto.graph.node:  # the exporter's notes (stack traces): a third of a small file
            del node.metadata_props[:]
        if weights != "float32":
            named = None if base is None else {f"model.{k}": v for k, v in base.state_dict().items()}
            _store_smaller(proto, weights, named)
        onnx.save(proto, str(tmp))
    return Path(path)
