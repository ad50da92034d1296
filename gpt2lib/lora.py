"""LoRA: fine-tune a frozen linear layer through a trainable low-rank update."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

Targets = Iterable[str] | Callable[[str, nn.Linear], bool] | None


def _check_rank_alpha(rank: int, alpha: float) -> None:
    if isinstance(rank, bool) or not isinstance(rank, int):
        raise TypeError(f"LoRA rank must be an int, got {type(rank).__name__}")
    if rank <= 0:
        raise ValueError(f"LoRA rank must be positive, got {rank}")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)):
        raise TypeError(f"LoRA alpha must be a number, got {type(alpha).__name__}")
    if not alpha > 0:  # also rejects NaN
        raise ValueError(f"LoRA alpha must be positive, got {alpha}")


class LoRALayer(nn.Module):
    """The low-rank update alone: ``x -> (alpha / rank) * x @ A @ B``, zero at initialisation."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        rank: int,
        alpha: float,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        _check_rank_alpha(rank, alpha)
        if in_features <= 0 or out_features <= 0:
            raise ValueError(
                f"LoRALayer needs positive in/out features, got {in_features}, {out_features}"
            )
        self.in_features, self.out_features = in_features, out_features
        self.rank, self.alpha = rank, alpha
        self.scaling = alpha / rank
        self.A = nn.Parameter(torch.empty(in_features, rank, device=device, dtype=dtype))
        self.B = nn.Parameter(torch.empty(rank, out_features, device=device, dtype=dtype))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Kaiming-uniform with a=sqrt(5), as nn.Linear, loralib and peft initialise A:
        # U(-1/sqrt(in), 1/sqrt(in)). A is stored (in, rank), so PyTorch's "fan_out" (size 0)
        # is in_features. (The book's default mode on (in, rank) uses fan_in = rank: wider.)
        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5), mode="fan_out")
        nn.init.zeros_(self.B)  # the update starts at exactly zero

    def delta_weight(self) -> torch.Tensor:
        """The update in ``nn.Linear``'s weight layout: ``(alpha / rank) * (A @ B)^T``, (out, in)."""
        return self.scaling * (self.A @ self.B).T

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scaling * (x @ self.A @ self.B)  # (..., in) -> (..., r) -> (..., out)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"rank={self.rank}, alpha={self.alpha}"
        )


class LinearWithLoRA(nn.Module):
    """An existing ``nn.Linear`` (kept as ``.linear``, weights untouched) plus a :class:`LoRALayer`.

    ``forward(x) = linear(x) + lora(x)``; after :meth:`merge` the update lives inside
    ``linear.weight`` and ``forward(x) = linear(x)``. Do not train while merged: :meth:`unmerge`
    subtracts the *current* update.
    """

    def __init__(self, linear: nn.Linear, rank: int, alpha: float) -> None:
        super().__init__()
        if isinstance(linear, LinearWithLoRA):
            raise ValueError("this layer already carries LoRA; wrap the plain nn.Linear only once")
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"LinearWithLoRA wraps an nn.Linear, got {type(linear).__name__}")
        self.linear = linear
        self.lora = LoRALayer(
            linear.in_features,
            linear.out_features,
            rank,
            alpha,
            device=linear.weight.device,
            dtype=linear.weight.dtype,
        )
        self.merged = False

    @torch.no_grad()
    def merge(self) -> None:
        """Fold the update into the base weight (idempotent)."""
        if not self.merged:
            self.linear.weight += self.lora.delta_weight()
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Take the update out of the base weight again (idempotent)."""
        if self.merged:
            self.linear.weight -= self.lora.delta_weight()
            self.merged = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.merged:
            return self.linear(x)  # (..., out), the update is inside the weight
        return self.linear(x) + self.lora(x)  # (..., out)

    def extra_repr(self) -> str:
        return f"merged={self.merged}"


def _name_matches(name: str, target: str) -> bool:
    """``"c_proj"`` matches ``"h.0.attn.c_proj"`` and ``"h.0.mlp.c_proj"``; ``"mlp.c_proj"`` one."""
    return name == target or name.endswith("." + target)


def lora_modules(model: nn.Module) -> Iterator[tuple[str, LinearWithLoRA]]:
    """``(qualified name, module)`` for every :class:`LinearWithLoRA` in ``model``."""
    for name, module in model.named_modules():
        if isinstance(module, LinearWithLoRA):
            yield name, module


def apply_lora(model: nn.Module, rank: int, alpha: float, targets: Targets = None) -> list[str]:
    """Replace linear layers of ``model`` by :class:`LinearWithLoRA`, in place.

    ``targets`` chooses the layers: ``None`` = every ``nn.Linear`` (a classification head
    included); names such as ``{"c_attn", "c_proj", "c_fc", "lm_head"}``, each matching a
    module's qualified name or its trailing part (``"mlp.c_proj"`` picks only the MLP's); or a
    predicate ``(name, linear) -> bool``. Returns the names of the wrapped layers. Then call
    :func:`mark_only_lora_as_trainable` to freeze the rest::

        apply_lora(model, rank=16, alpha=16)
        mark_only_lora_as_trainable(model, also_train=("lm_head",))
    """
    _check_rank_alpha(rank, alpha)
    if any(True for _ in lora_modules(model)):
        raise ValueError("model already holds LoRA layers; apply_lora must be called only once")
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear) and n]
    if targets is None:
        chosen = [n for n, _ in linears]
    elif callable(targets):
        chosen = [n for n, m in linears if targets(n, m)]
    else:
        wanted = {targets} if isinstance(targets, str) else set(targets)
        unknown = sorted(t for t in wanted if not any(_name_matches(n, t) for n, _ in linears))
        if unknown:
            names = sorted({n.rsplit(".", 1)[-1] for n, _ in linears})
            raise ValueError(f"no nn.Linear named {unknown} in the model; linear layers: {names}")
        chosen = [n for n, _ in linears if any(_name_matches(n, t) for t in wanted)]
    if not chosen:
        raise ValueError("targets selected no nn.Linear layer; nothing to adapt")
    for name in chosen:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, child, LinearWithLoRA(getattr(parent, child), rank, alpha))
    return chosen


def _require_lora(model: nn.Module) -> list[tuple[str, LinearWithLoRA]]:
    layers = list(lora_modules(model))
    if not layers:
        raise ValueError("model holds no LoRA layers; call apply_lora(model, rank, alpha) first")
    return layers


def merge_lora(model: nn.Module) -> None:
    """Fold every LoRA update into its base weight: same outputs, plain-linear speed."""
    layers = _require_lora(model)
    uses: dict[int, int] = {}
    for _, p in model.named_parameters(remove_duplicate=False):
        uses[id(p)] = uses.get(id(p), 0) + 1
    for name, layer in layers:
        if uses[id(layer.linear.weight)] > 1:
            raise ValueError(
                f"{name}.linear.weight is shared with another module (tied embeddings?); "
                "merging would change that module too. Untie the weight before merging."
            )
    for _, layer in layers:
        layer.merge()


def unmerge_lora(model: nn.Module) -> None:
    """Undo :func:`merge_lora`: base weights back to their own values, LoRA active again."""
    for _, layer in _require_lora(model):
        layer.unmerge()


def mark_only_lora_as_trainable(model: nn.Module, also_train: Iterable[str] = ()) -> None:
    """Freeze every parameter except the LoRA ``A`` and ``B`` matrices.

    ``also_train`` names modules (matched like :func:`apply_lora`'s targets) whose parameters
    stay trainable too, e.g. ``("lm_head",)`` for a new classification head. A name in it that
    matches a :class:`LinearWithLoRA` makes that layer's base weight trainable as well.
    """
    _require_lora(model)
    names = {also_train} if isinstance(also_train, str) else set(also_train)
    modules = dict(model.named_modules())
    unknown = sorted(t for t in names if not any(_name_matches(n, t) for n in modules if n))
    if unknown:
        raise ValueError(f"also_train names no module of the model: {unknown}")
    for p in model.parameters():
        p.requires_grad_(False)
    for name, module in modules.items():
        if isinstance(module, LoRALayer) or (name and any(_name_matches(name, t) for t in names)):
            for p in module.parameters():
                p.requires_grad_(True)


@dataclass(frozen=True)
class LoRAReport:
    """Parameter counts of a model with LoRA (each tied matrix counted once)."""

    total: int  # every parameter, LoRA included
    trainable: int  # requires_grad
    lora: int  # the A and B matrices
    layers: int  # number of LinearWithLoRA modules

    @property
    def trainable_percent(self) -> float:
        return 100.0 * self.trainable / self.total if self.total else 0.0

    def __str__(self) -> str:
        return (
            f"trainable: {self.trainable:,} of {self.total:,} parameters "
            f"({self.trainable_percent:.2f}%); LoRA: {self.lora:,} in {self.layers} layers"
        )


def lora_report(model: nn.Module) -> LoRAReport:
    """Trainable vs total parameters, and how many of them are LoRA's."""
    params = list(model.parameters())
    layers = list(lora_modules(model))
    return LoRAReport(
        total=sum(p.numel() for p in params),
        trainable=sum(p.numel() for p in params if p.requires_grad),
        lora=sum(p.numel() for _, m in layers for p in m.lora.parameters()),
        layers=len(layers),
    )


def lora_parameter_count(shapes: Iterable[tuple[int, int]], rank: int) -> int:
    """LoRA parameters for linear layers of ``(in_features, out_features)``: ``rank * (in + out)``
    each (``A`` is in x rank, ``B`` rank x out), counted without building anything."""
    _check_rank_alpha(rank, 1.0)
    return sum(rank * (n_in + n_out) for n_in, n_out in shapes)
