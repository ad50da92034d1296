"""The training loop every chapter uses: loss, schedule, evaluation, checkpoints, DDP."""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import math
import random
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from torch import nn
from torch.utils.data import (
    DataLoader,
    IterableDataset,
    RandomSampler,
    SequentialSampler,
)
from torch.utils.data.distributed import DistributedSampler

from .checkpoint import (
    Checkpoint,
    History,
    RunState,
    differences,
    load_payload,
    read_checkpoint_file,
    rng_state,
    save_checkpoint,
    set_rng_state,
    unwrap,
)
from .distributed import (
    DistInfo,
    EpochSampler,
    all_gather_objects,
    all_reduce_sum,
    dist_info,
    init_distributed,
)
from .loss import LossFn, calc_loss_batch
from .model import eval_mode

EvalFn = Callable[[nn.Module, Iterable[Any], torch.device], dict[str, float]]


# ---------------------------------------------------------------------------------------------
# Configuration, schedule, optimizer


@dataclass(frozen=True)
class TrainConfig:
    """Everything :func:`train` needs besides the model and the data. The run is ``max_steps``
    steps or ``epochs`` passes, whichever ends first; ``lr`` is the peak rate, reached after
    ``warmup_steps`` linear steps, then held (``"constant"``) or lowered along a cosine to
    ``min_lr`` at the last step (``"cosine"``)."""

    max_steps: int | None = None
    epochs: int | None = None
    lr: float = 4e-4
    min_lr: float = 0.0
    warmup_steps: int = 0
    schedule: Literal["cosine", "constant"] = "cosine"
    weight_decay: float = 0.1  # on weight matrices and embeddings; never on biases or LayerNorm
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float | None = 1.0  # max global gradient norm; None: no clipping
    eval_every: int = 50  # steps between evaluations (and always after the last step)
    eval_batches: int | None = 5  # batches per evaluation of each loader; None: all
    eval_at_start: bool = True  # also evaluate before the first step (step 0)
    checkpoint_path: str | None = None  # where the checkpoint goes; None: no checkpoints
    checkpoint_every: int | None = None  # steps between checkpoints; None: only at the end
    seed: int = 123  # dropout and shuffling (each process uses seed + rank for dropout)
    device: str | None = None  # None: CUDA, then MPS, then CPU (torchrun: cuda:LOCAL_RANK)
    dtype: Literal["float32", "bfloat16"] = "float32"  # bfloat16: autocast forward passes
    progress: bool = True  # a tqdm bar on stderr (rank 0 only)
    compile: bool | Literal["auto"] = "auto"  # torch.compile the training step; auto: on CUDA
    fused_optimizer: bool | Literal["auto"] = "auto"  # AdamW's fused kernel; auto: on CUDA

    # the fields a resumed run may change (more steps, other evaluation or checkpoint
    # intervals, another device); every other field defines the run
    RESUMABLE: ClassVar[frozenset[str]] = frozenset(
        {"max_steps", "epochs", "eval_every", "eval_batches", "eval_at_start", "checkpoint_path",
         "checkpoint_every", "device", "progress", "compile", "fused_optimizer"}
    )  # fmt: skip

    def __post_init__(self) -> None:
        if self.max_steps is None and self.epochs is None:
            raise ValueError("TrainConfig needs max_steps or epochs (or both)")
        for name in ("max_steps", "epochs", "eval_every", "eval_batches", "checkpoint_every"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"TrainConfig.{name} must be positive, got {value}")
        if self.lr <= 0 or not 0 <= self.min_lr <= self.lr:
            raise ValueError(f"need lr > 0 and 0 <= min_lr <= lr, got {self.lr=}, {self.min_lr=}")
        if self.warmup_steps < 0:
            raise ValueError(f"TrainConfig.warmup_steps must be >= 0, got {self.warmup_steps}")
        if self.schedule not in ("cosine", "constant"):
            raise ValueError(f"schedule must be 'cosine' or 'constant', got {self.schedule!r}")
        if self.weight_decay < 0:
            raise ValueError(f"TrainConfig.weight_decay must be >= 0, got {self.weight_decay}")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ValueError(
                f"TrainConfig.grad_clip must be positive or None, got {self.grad_clip}"
            )
        if self.dtype not in ("float32", "bfloat16"):
            raise ValueError(f"dtype must be 'float32' or 'bfloat16', got {self.dtype!r}")
        for name in ("compile", "fused_optimizer"):
            if getattr(self, name) not in (True, False, "auto"):
                raise ValueError(
                    f"TrainConfig.{name} must be True, False or 'auto', got {getattr(self, name)!r}"
                )

    def switch(self, name: Literal["compile", "fused_optimizer"], device: torch.device) -> bool:
        """Whether ``compile`` or ``fused_optimizer`` is on for ``device``. "auto": on CUDA,
        where both pay off; on a CPU compiling costs more than a chapter saves, and fused AdamW
        changes the last bits of every step."""
        value = getattr(self, name)
        return torch.device(device).type == "cuda" if value == "auto" else bool(value)

    def total_steps(self, steps_per_epoch: int) -> int:
        """Optimizer steps of the whole run for a loader of ``steps_per_epoch`` batches."""
        candidates = [self.max_steps] if self.max_steps is not None else []
        if self.epochs is not None:
            candidates.append(self.epochs * steps_per_epoch)
        return min(candidates)  # type: ignore[type-var]


@dataclass(frozen=True)
class LoopCaps:
    """Upper bounds on a chapter's loop counts; None: no bound. A chapter's settings cell holds
    one (:data:`NO_CAPS`, or :data:`REHEARSAL_CAPS` when ``scripts/rehearse.py`` runs it) and
    passes the capped counts on as arguments.

    ``steps``: optimizer steps of a training run; ``batches``: batches of an evaluation pass;
    ``new_tokens``: tokens of a generation. ``caps.limit(count, "batches")`` is ``count`` under
    the bound (``None``, "all of them", becomes the bound itself).
    """

    steps: int | None = None
    batches: int | None = None
    new_tokens: int | None = None

    def limit(self, count: int | None, what: Literal["steps", "batches", "new_tokens"]) -> int | None:
        bound = getattr(self, what)
        if bound is None:
            return count
        return bound if count is None else min(count, bound)


NO_CAPS = LoopCaps()
REHEARSAL_CAPS = LoopCaps(steps=2, batches=2, new_tokens=4)


def lr_at(step: int, cfg: TrainConfig, total_steps: int | None = None) -> float:
    """Learning rate of step ``step`` (0-based) of ``total_steps`` (default ``cfg.max_steps``):
    warmup ``lr * (step + 1) / warmup_steps``, then ``lr``, or the cosine ``min_lr + (lr -
    min_lr) * (1 + cos(pi * p)) / 2`` with ``p`` from 0 after warmup to 1 after the last step."""
    total = total_steps if total_steps is not None else cfg.max_steps
    if total is None:
        raise ValueError("lr_at needs total_steps when cfg.max_steps is None")
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return cfg.lr
    progress = min((step - cfg.warmup_steps) / max(total - cfg.warmup_steps, 1), 1.0)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1.0 + math.cos(math.pi * progress))


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW over the trainable parameters: weight decay on matrices and embeddings, none on
    biases and LayerNorm (1-D), as in GPT-3 and nanoGPT; frozen parameters are left out."""
    trainable = [p for p in model.parameters() if p.requires_grad]  # tied weights appear once
    if not trainable:
        raise ValueError("the model has no trainable parameters (all have requires_grad=False)")
    groups = [
        {"params": [p for p in trainable if p.dim() >= 2], "weight_decay": cfg.weight_decay},
        {"params": [p for p in trainable if p.dim() < 2], "weight_decay": 0.0},
    ]
    groups = [g for g in groups if g["params"]]
    fused = cfg.switch("fused_optimizer", trainable[0].device) or None  # None: PyTorch's choice
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, fused=fused)


# ---------------------------------------------------------------------------------------------
# Data: deterministic, sharded, resumable batches


class _Batches:
    """Batches of one loader for one process: ``epoch(e, skip)`` iterates epoch ``e`` after
    ``skip`` batches. A map-style DataLoader is rebuilt around an :class:`EpochSampler` (order
    from seed and epoch, sharded, skipping for free); any other iterable is used as it is (one
    process only), and skipped batches are drawn and dropped."""

    def __init__(self, loader: Iterable[Any], info: DistInfo, seed: int) -> None:
        self.loader, self.sampler = loader, None
        self.batch_size = 1
        sampler_shuffle = _sampler_shuffle(loader)
        if sampler_shuffle is not None:
            assert isinstance(loader, DataLoader) and loader.batch_size is not None
            self.batch_size = loader.batch_size
            self.sampler = EpochSampler(
                len(loader.dataset),  # type: ignore[arg-type]
                sampler_shuffle,
                seed,
                info.rank,
                info.world_size,
            )
            self.loader = DataLoader(
                loader.dataset,
                batch_size=loader.batch_size,
                sampler=self.sampler,
                collate_fn=loader.collate_fn,
                drop_last=loader.drop_last,
                num_workers=loader.num_workers,
                pin_memory=loader.pin_memory,
                worker_init_fn=loader.worker_init_fn,
                # its own generator (for worker seeds), so iterating never draws from, and
                # shifts, the global random state that dropout uses
                generator=torch.Generator().manual_seed(seed),
            )
            self.drop_last = loader.drop_last
        elif info.distributed:
            raise TypeError(
                "under torchrun the training and validation data must be DataLoaders over a "
                "map-style data set with a batch_size (so they can be sharded across processes)"
            )

    def __len__(self) -> int:
        if self.sampler is None:
            return len(self.loader)  # type: ignore[arg-type]
        n = self.sampler.shard_size()
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def epoch(self, epoch: int, skip: int = 0) -> Iterator[Any]:
        if self.sampler is None:
            return itertools.islice(iter(self.loader), skip, None)
        self.sampler.set_epoch(epoch)
        self.sampler.set_start(skip * self.batch_size)
        return iter(self.loader)


def _sampler_shuffle(loader: Iterable[Any]) -> bool | None:
    """Whether a rebuildable loader shuffles; None if it cannot be rebuilt."""
    if not isinstance(loader, DataLoader) or loader.batch_size is None:
        return None
    if isinstance(loader.dataset, IterableDataset):
        return None
    sampler = loader.sampler
    if isinstance(sampler, RandomSampler):
        return True
    if isinstance(sampler, SequentialSampler):
        return False
    if isinstance(sampler, (DistributedSampler, EpochSampler)):
        return sampler.shuffle
    return None


# ---------------------------------------------------------------------------------------------
# The loop


def _resolve_device(name: str | None, info: DistInfo) -> torch.device:
    if name is None:
        from .device import get_device

        device = get_device()
    else:
        device = torch.device(name)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", info.local_rank if info.distributed else 0)
    return device


def _count(batch: Any) -> tuple[int, int]:
    """(tokens, examples) of a batch: the size of its first tensor and its first dimension."""
    first = batch
    while isinstance(first, (list, tuple)) and first:
        first = first[0]
    if isinstance(first, dict) and first:
        first = next(iter(first.values()))
    if isinstance(first, torch.Tensor) and first.dim() > 0:
        return first.numel(), first.shape[0]
    return 0, 0


def _evaluate(
    model: nn.Module,
    batches: _Batches,
    num_batches: int | None,
    device: torch.device,
    loss_fn: LossFn,
    eval_fn: EvalFn | None,
    autocast: contextlib.AbstractContextManager[Any],
) -> tuple[float, dict[str, float]]:
    """Mean loss (and ``eval_fn``'s metrics) over the first batches, averaged over processes."""
    subset = list(itertools.islice(batches.epoch(0), num_batches))
    total, count, metrics = 0.0, 0, {}
    with eval_mode(model), torch.no_grad(), autocast:
        for batch in subset:
            total += loss_fn(model, batch, device).item()
            count += 1
        if eval_fn is not None:
            metrics = dict(eval_fn(model, subset, device))
    names = sorted(metrics)
    summed = all_reduce_sum(
        torch.tensor([total, count, *(metrics[n] for n in names), 1.0], dtype=torch.float64)
    )
    loss = (summed[0] / summed[1]).item() if summed[1] > 0 else float("nan")
    return loss, {n: (summed[2 + i] / summed[-1]).item() for i, n in enumerate(names)}


@contextlib.contextmanager
def _process_group(device: torch.device) -> Iterator[None]:
    """Join ``torchrun``'s process group for the duration (if not joined already)."""
    created = init_distributed(device)
    try:
        yield
    finally:
        if created:
            torch.distributed.barrier()
            torch.distributed.destroy_process_group()


@dataclass
class _Run:
    """What one call of :func:`train` works with; ``state`` is where the run stands."""

    model: nn.Module
    cfg: TrainConfig
    info: DistInfo
    device: torch.device
    loss_fn: LossFn
    eval_fn: EvalFn | None
    optimizer: torch.optim.Optimizer
    train_batches: _Batches
    eval_sets: dict[str, _Batches]
    total: int  # optimizer steps of the whole run
    layout: dict[str, int]  # how the data is batched: checked when a run resumes
    state: RunState = field(default_factory=RunState)
    bar: Any = None

    @property
    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        enabled = self.cfg.dtype == "bfloat16"
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=enabled)


def _prepare(
    model: nn.Module, train_loader: Iterable[Any], val_loader: Iterable[Any] | None,
    cfg: TrainConfig, loss_fn: LossFn, eval_fn: EvalFn | None,
    optimizer: torch.optim.Optimizer | None,
) -> _Run:  # fmt: skip
    """Device, seeds, batches and optimizer of a run that starts at step 0."""
    info = dist_info()
    device = _resolve_device(cfg.device, info)
    model.to(device)
    torch.manual_seed(cfg.seed + info.rank)
    random.seed(cfg.seed + info.rank)
    train_batches = _Batches(train_loader, info, cfg.seed)
    if len(train_batches) == 0:
        raise ValueError("the training loader yields no batches")
    # evaluation always reads epoch 0's first batches: a fixed sample (spread over the data
    # when the loader shuffles), the same at every evaluation and in every process layout
    eval_sets = {"train": _Batches(train_loader, info, cfg.seed)}  # own sampler: own position
    if val_loader is not None:
        eval_sets["val"] = _Batches(val_loader, info, cfg.seed)
    optimizer = optimizer if optimizer is not None else build_optimizer(model, cfg)
    layout = {
        "batch_size": train_batches.batch_size,
        "batches_per_epoch": len(train_batches),
        "world_size": info.world_size,
    }
    total = cfg.total_steps(len(train_batches))
    return _Run(
        model, cfg, info, device, loss_fn, eval_fn, optimizer, train_batches, eval_sets,
        total, layout,
    )  # fmt: skip


def check_resume(
    ckpt: Checkpoint, cfg: TrainConfig, data_layout: dict[str, int], model: nn.Module
) -> None:
    """Raise ValueError unless a run with ``cfg`` and ``data_layout`` continues ``ckpt``'s run:
    the same settings but :attr:`TrainConfig.RESUMABLE`, the same batching and dropout."""
    diffs = []
    if ckpt.train_config is not None:
        diffs += differences(ckpt.train_config, asdict(cfg), skip=TrainConfig.RESUMABLE)
    if ckpt.data_layout is not None:
        diffs += differences(ckpt.data_layout, data_layout)
    model_cfg = getattr(unwrap(model), "cfg", None)
    if ckpt.model_config is not None and hasattr(model_cfg, "drop_rate"):
        saved = ckpt.model_config.get("drop_rate")
        if saved != model_cfg.drop_rate:
            diffs.append(f"drop_rate: {saved!r} in the checkpoint, {model_cfg.drop_rate!r} now")
    if diffs:
        raise ValueError(
            f"cannot resume from {cfg.checkpoint_path}: the run differs from the one that wrote "
            f"it: {'; '.join(diffs)}. Start afresh (resume=False, or another checkpoint_path)."
        )


def _resume(run: _Run, path: Path) -> None:
    """Continue the run saved at ``path``: checked against this run first, then loaded."""
    saved = read_checkpoint_file(path, run.device)  # read once: checked, then loaded
    check_resume(
        Checkpoint(RunState(), train_config=saved["train_config"],
                   model_config=saved["model_config"], data_layout=saved.get("data_layout")),
        run.cfg, run.layout, run.model,
    )  # fmt: skip
    ckpt = load_payload(path, saved, run.model, run.optimizer)
    run.state = ckpt.state
    if len(ckpt.rng_states) == run.info.world_size:
        set_rng_state(ckpt.rng_states[run.info.rank])


def _record(run: _Run) -> None:
    """Evaluate on each loader's fixed sample and append the results to the history."""
    state, history, losses = run.state, run.state.history, {"val": float("nan")}
    for name, batches in run.eval_sets.items():
        losses[name], metrics = _evaluate(
            run.model, batches, run.cfg.eval_batches, run.device, run.loss_fn, run.eval_fn,
            run.autocast,
        )  # fmt: skip
        for key, value in metrics.items():
            history.metrics.setdefault(f"{name}_{key}", []).append(value)
    history.steps.append(state.step)
    history.tokens_seen.append(state.tokens_seen)
    history.examples_seen.append(state.examples_seen)
    history.train_loss.append(losses["train"])
    history.val_loss.append(losses["val"])
    history.lr.append(lr_at(max(state.step - 1, 0), run.cfg, run.total))
    run.bar.set_postfix(train=f"{losses['train']:.3f}", val=f"{losses['val']:.3f}")


def _save(run: _Run) -> None:
    """Checkpoint the run (rank 0 writes; every process contributes its random state)."""
    rngs = all_gather_objects(rng_state())  # every process's dropout state
    if not run.info.is_main:
        return
    state = run.state
    if state.batch_in_epoch >= len(run.train_batches):  # store the next epoch's start
        state = dataclasses.replace(state, epoch=state.epoch + 1, batch_in_epoch=0)
    save_checkpoint(
        run.cfg.checkpoint_path,  # type: ignore[arg-type]
        run.model, run.optimizer, state,
        rng_states=rngs,  # type: ignore[arg-type]
        train_config=run.cfg, data_layout=run.layout,
    )  # fmt: skip


def _step(run: _Run, net: nn.Module, batch: Any) -> None:
    """One optimizer step on ``batch``; ``net`` is the model or its DDP wrapper."""
    cfg, optimizer, state = run.cfg, run.optimizer, run.state
    for group in optimizer.param_groups:
        group["lr"] = lr_at(state.step, cfg, run.total)
    with run.autocast:
        loss = run.loss_fn(net, batch, run.device)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if cfg.grad_clip is not None:
        params = [p for group in optimizer.param_groups for p in group["params"]]
        nn.utils.clip_grad_norm_(params, cfg.grad_clip)
    optimizer.step()
    stats = all_reduce_sum(torch.tensor([loss.item(), *_count(batch)]))  # over processes
    state.tokens_seen += int(stats[1])
    state.examples_seen += int(stats[2])
    state.step += 1
    state.batch_in_epoch += 1
    run.bar.update(1)
    run.bar.set_postfix(loss=f"{stats[0].item() / run.info.world_size:.3f}", refresh=False)


def _loop(run: _Run, net: nn.Module, on_step: Callable[[int, History], None] | None) -> None:
    """Step through the epochs until ``run.total`` steps, evaluating and checkpointing."""
    cfg, state = run.cfg, run.state
    run.model.train()
    if state.step == 0 and cfg.eval_at_start and not state.history.steps:
        _record(run)
    while state.step < run.total:
        for batch in run.train_batches.epoch(state.epoch, state.batch_in_epoch):
            _step(run, net, batch)
            last = state.step == run.total
            if last or state.step % cfg.eval_every == 0:
                _record(run)
            every = cfg.checkpoint_every
            if cfg.checkpoint_path and (last or (every and state.step % every == 0)):
                _save(run)
            if on_step is not None:
                on_step(state.step, state.history)
            if last:
                return
        state.epoch, state.batch_in_epoch = state.epoch + 1, 0  # the epoch ran out


def train(
    model: nn.Module,
    train_loader: Iterable[Any],
    val_loader: Iterable[Any] | None,
    cfg: TrainConfig,
    *,
    loss_fn: LossFn = calc_loss_batch,
    eval_fn: EvalFn | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    resume: bool = False,
    on_step: Callable[[int, History], None] | None = None,
) -> History:
    """Train ``model`` in place; return the :class:`History` of its evaluations.

    ``loss_fn(model, batch, device)``: the objective (under ``torchrun`` ``model`` is the DDP
    wrapper: call it); ``eval_fn(model, batches, device)``: metrics at each evaluation. With
    ``resume=True`` a run continues exactly from the checkpoint at ``cfg.checkpoint_path``
    (after :func:`check_resume`). ``on_step(step, history)`` runs after every step; without an
    ``optimizer``, :func:`build_optimizer` makes one. With ``cfg.compile`` the steps run through
    ``torch.compile`` (after the DDP wrapper, as PyTorch advises).
    """
    from tqdm import tqdm

    run = _prepare(model, train_loader, val_loader, cfg, loss_fn, eval_fn, optimizer)
    path = Path(cfg.checkpoint_path) if cfg.checkpoint_path else None
    if resume and path is not None and path.is_file():
        _resume(run, path)
    run.bar = tqdm(
        total=run.total, initial=run.state.step, desc="training", unit="step", file=sys.stderr,
        # pass `disable` only to switch the bar off: left unset, TQDM_DISABLE=1 still applies
        **({} if cfg.progress and run.info.is_main else {"disable": True}),
        dynamic_ncols=True,
    )  # fmt: skip
    compiled = cfg.switch("compile", run.device)  # the training steps; evaluation stays eager
    with _process_group(run.device), contextlib.closing(run.bar):
        if not run.info.distributed:
            _loop(run, torch.compile(model) if compiled else model, on_step)
        else:
            ids = [run.device.index] if run.device.type == "cuda" else None
            ddp = nn.parallel.DistributedDataParallel(model, device_ids=ids)
            try:
                _loop(run, torch.compile(ddp) if compiled else ddp, on_step)
            finally:
                del ddp  # DDP's reducer must go before the process group does
    return run.state.history
