"""Turn a GPT model into a text classifier: a small output head read at one position."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from .lora import Targets, apply_lora, mark_only_lora_as_trainable
from .model import GPTModel, eval_mode

if TYPE_CHECKING:
    import tiktoken

Pool = Literal["last_real", "last"]
Method = Literal["lora", "last_block", "all"]
POOLS: tuple[Pool, ...] = ("last_real", "last")
METHODS: tuple[Method, ...] = ("lora", "last_block", "all")


def _check_gpt(model: nn.Module) -> GPTModel:
    if not isinstance(model, GPTModel):
        raise TypeError(f"expected a GPTModel, got {type(model).__name__}")
    return model


def add_classification_head(
    model: GPTModel,
    num_classes: int = 2,
    method: Method | None = None,
    *,
    rank: int = 16,
    alpha: float = 16,
    lora_targets: Targets = None,
) -> GPTModel:
    """Replace ``model.lm_head`` by a ``Linear(emb_dim, num_classes)`` head (with bias); return
    ``model`` (changed in place).

    The new head gets PyTorch's default ``nn.Linear`` initialisation from the global random
    generator (seed it for reproducible runs). ``method`` sets what will be trained:

    - ``None``: nothing is frozen or added (e.g. to rebuild a saved model's structure);
    - ``"lora"``: :func:`~gpt2lib.lora.apply_lora` with ``rank``, ``alpha`` on ``lora_targets``
      (every linear layer, the head included, by default), then only the LoRA matrices train.
      A head left out of the targets is trained directly;
    - ``"last_block"``: :func:`freeze_all_but_last_block`;
    - ``"all"``: every parameter trains (full fine-tuning).
    """
    _check_gpt(model)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
    if method is not None and method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {METHODS} or None")
    weight = model.wte.weight
    model.lm_head = nn.Linear(
        model.cfg.emb_dim, num_classes, bias=True, device=weight.device, dtype=weight.dtype
    )
    if method == "lora":
        wrapped = apply_lora(model, rank, alpha, targets=lora_targets)
        mark_only_lora_as_trainable(model, also_train=() if "lm_head" in wrapped else ("lm_head",))
    elif method == "last_block":
        freeze_all_but_last_block(model)
    elif method == "all":
        model.requires_grad_(True)
    return model


def freeze_all_but_last_block(model: GPTModel) -> GPTModel:
    """Train only the last transformer block, the final LayerNorm and the output head (the book's
    chapter-6 fine-tuning); everything else gets ``requires_grad=False``. Returns ``model``."""
    _check_gpt(model)
    model.requires_grad_(False)
    for module in (model.h[-1], model.ln_f, model.lm_head):
        module.requires_grad_(True)
    return model


def num_classes_of(model: GPTModel) -> int:
    """Number of outputs of the model's head (``vocab_size`` for a language model)."""
    head = _check_gpt(model).lm_head
    linear = getattr(head, "linear", head)  # a LoRA-wrapped head keeps its Linear as .linear
    return int(linear.out_features)


# ---------------------------------------------------------------------------------------------
# Logits, loss, accuracy


def _check_pool(pool: str) -> None:
    if pool not in POOLS:
        raise ValueError(f"unknown pool {pool!r}; choose one of {POOLS}")


def class_logits(
    model: nn.Module,
    input_ids: torch.Tensor,
    lengths: torch.Tensor | None = None,
    pool: Pool = "last_real",
) -> torch.Tensor:
    """Class logits (B, num_classes) of right-padded token IDs ``input_ids`` (B, T).

    ``pool="last_real"`` reads the head at position ``lengths - 1`` (each row's last real
    token; ``lengths`` (B,) is required) and runs the model only up to the longest row;
    ``pool="last"`` reads position ``T - 1``.
    """
    _check_pool(pool)
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must be (batch, tokens), got shape {tuple(input_ids.shape)}")
    if pool == "last":
        return model(input_ids)[:, -1, :]  # (B, num_classes)
    if lengths is None:
        raise ValueError(
            "pool='last_real' needs each row's length: batches of (input_ids, labels, lengths), "
            "e.g. SpamDataset(..., return_length=True); or use pool='last'"
        )
    B, T = input_ids.shape
    lengths = lengths.to(input_ids.device)
    if lengths.shape != (B,) or bool(((lengths < 1) | (lengths > T)).any()):
        raise ValueError(
            f"lengths must be (batch,) = ({B},) with values in 1..{T}, "
            f"got shape {tuple(lengths.shape)}, values {lengths.tolist()}"
        )
    # No real token attends to the padding after it, so the columns past the longest message
    # can be cut before the forward pass: same logits, less work.
    logits = model(input_ids[:, : int(lengths.max())])  # (B, T', num_classes)
    return logits[torch.arange(B, device=logits.device), lengths - 1]  # (B, num_classes)


def _unpack(batch: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    if not isinstance(batch, (tuple, list)) or len(batch) not in (2, 3):
        raise TypeError(
            "a classification batch is (input_ids, labels) or (input_ids, labels, lengths), "
            f"got {type(batch).__name__}"
            + (f" of {len(batch)} items" if isinstance(batch, (tuple, list)) else "")
        )
    input_ids, labels = batch[0], batch[1]
    return input_ids, labels, batch[2] if len(batch) == 3 else None


def _batch_logits(
    model: nn.Module, batch: Any, device: torch.device | str, pool: Pool
) -> tuple[torch.Tensor, torch.Tensor]:
    input_ids, labels, lengths = _unpack(batch)
    logits = class_logits(model, input_ids.to(device), lengths, pool)
    return logits, labels.to(logits.device)


def classification_loss(
    model: nn.Module, batch: Any, device: torch.device | str, pool: Pool = "last_real"
) -> torch.Tensor:
    """Cross-entropy of one batch's class logits against its labels (a ``loss_fn`` for
    :func:`gpt2lib.train.train`; pick the pool with ``functools.partial``)."""
    logits, labels = _batch_logits(model, batch, device, pool)
    return F.cross_entropy(logits.float(), labels)


@torch.no_grad()
def _count_correct(
    model: nn.Module, batches: Iterable[Any], device: torch.device | str, pool: Pool
) -> tuple[int, int]:
    correct = total = 0
    for batch in batches:
        logits, labels = _batch_logits(model, batch, device, pool)
        correct += int((logits.argmax(dim=-1) == labels).sum())
        total += labels.numel()
    return correct, total


def accuracy_eval(
    model: nn.Module, batches: Iterable[Any], device: torch.device | str, pool: Pool = "last_real"
) -> dict[str, float]:
    """``{"accuracy": fraction correct}`` over ``batches`` (an ``eval_fn`` for
    :func:`gpt2lib.train.train`, which records it as ``train_accuracy`` and ``val_accuracy``)."""
    correct, total = _count_correct(model, batches, device, pool)
    return {"accuracy": correct / total if total else float("nan")}


def calc_accuracy_loader(
    model: nn.Module,
    loader: Iterable[Any],
    device: torch.device | str,
    num_batches: int | None = None,
    pool: Pool = "last_real",
) -> float:
    """Fraction of correct predictions over the first ``num_batches`` batches (all by default),
    in eval mode; the model's mode is restored afterwards."""
    if num_batches is not None and num_batches <= 0:
        raise ValueError(f"num_batches must be positive or None, got {num_batches}")
    with eval_mode(model):
        correct, total = _count_correct(model, itertools.islice(loader, num_batches), device, pool)
    return correct / total if total else float("nan")


def predict_loader(
    model: nn.Module,
    loader: Iterable[Any],
    device: torch.device | str,
    pool: Pool = "last_real",
    num_batches: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(labels, predictions)`` of the examples in the first ``num_batches`` batches of
    ``loader`` (all by default), as two CPU long tensors."""
    if num_batches is not None and num_batches <= 0:
        raise ValueError(f"num_batches must be positive or None, got {num_batches}")
    labels, preds = [], []
    with eval_mode(model), torch.no_grad():
        for batch in itertools.islice(loader, num_batches):
            logits, y = _batch_logits(model, batch, device, pool)
            labels.append(y.cpu())
            preds.append(logits.argmax(dim=-1).cpu())
    if not labels:
        raise ValueError("the loader yielded no batches")
    return torch.cat(labels), torch.cat(preds)


def confusion_matrix(
    labels: torch.Tensor | Sequence[int],
    predictions: torch.Tensor | Sequence[int],
    num_classes: int | None = None,
) -> torch.Tensor:
    """Counts (num_classes, num_classes): row = true class, column = predicted class."""
    y, p = torch.as_tensor(labels).flatten(), torch.as_tensor(predictions).flatten()
    if y.shape != p.shape:
        raise ValueError(f"{y.numel()} labels but {p.numel()} predictions")
    if y.is_floating_point() or p.is_floating_point():
        raise TypeError("labels and predictions must be integer class indices")
    if y.numel() and int(torch.minimum(y.min(), p.min())) < 0:
        raise ValueError("class indices must be >= 0")
    found = int(torch.maximum(y.max(), p.max())) + 1 if y.numel() else 0
    k = found if num_classes is None else num_classes
    if found > k:
        raise ValueError(f"class index {found - 1} found but num_classes={num_classes}")
    return torch.bincount(y.long() * k + p.long(), minlength=k * k).reshape(k, k)


# ---------------------------------------------------------------------------------------------
# New messages


@torch.no_grad()
def classify(
    text: str,
    model: GPTModel,
    tokenizer: tiktoken.Encoding,
    max_length: int | None = None,
    labels: Sequence[str] = ("ham", "spam"),
    pool: Pool = "last_real",
    pad_token_id: int = 50256,
) -> str:
    """The label the model gives ``text``.

    The message is tokenized as in training and cut to ``max_length`` tokens (default and upper
    bound: the model's context length). With ``pool="last"`` it is then right-padded to
    ``max_length``, as the training batches were (so pass the training set's ``max_length``);
    with ``pool="last_real"`` padding would change nothing and is skipped.
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"text must be a non-empty string, got {text!r}")
    _check_pool(pool)
    context = _check_gpt(model).cfg.context_length
    if max_length is not None and not 0 < max_length <= context:
        raise ValueError(
            f"max_length must be in 1..{context} (the context length), got {max_length}"
        )
    if len(labels) != num_classes_of(model):
        raise ValueError(f"{len(labels)} labels for a head with {num_classes_of(model)} classes")
    limit = max_length if max_length is not None else context
    ids = tokenizer.encode(text, disallowed_special=())[:limit]
    if pool == "last" and max_length is not None:
        ids = ids + [pad_token_id] * (max_length - len(ids))
    device = model.wte.weight.device
    with eval_mode(model):
        logits = model(torch.tensor([ids], device=device))[0, -1]  # (num_classes,)
    return labels[int(logits.argmax())]
