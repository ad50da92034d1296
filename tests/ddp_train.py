"""Run by tests/test_train.py under ``torchrun --nproc_per_node=2`` (not collected by pytest).

Trains a tiny GPT on fixed random tokens with :func:`gpt2lib.train.train` and, on rank 0,
writes the history and final weights to the path given as the first argument; a second
argument ``compile`` trains with ``TrainConfig(compile=True)``.
"""

import dataclasses
import json
import os
import sys

# each rank compiles into a cache of its own (the test gives the run a fresh folder): two ranks
# writing one shared cache once made one read the other's half-written kernel ("file too short")
if "GPT2LIB_TEST_INDUCTOR_CACHE" in os.environ:
    rank_cache = os.path.join(os.environ["GPT2LIB_TEST_INDUCTOR_CACHE"], f"rank{os.environ.get('RANK', '0')}")
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = rank_cache

import torch  # noqa: E402 (after the cache folder is chosen)

from gpt2lib import GPTConfig, GPTModel  # noqa: E402
from gpt2lib.data.text import SlidingWindowDataset  # noqa: E402
from gpt2lib.distributed import dist_info  # noqa: E402
from gpt2lib.train import TrainConfig, train  # noqa: E402

TINY = GPTConfig(vocab_size=100, context_length=16, emb_dim=32, n_heads=4, n_layers=2)
GLOBAL_BATCH = 4
STEPS = 6


def setup(
    world_size: int,
) -> tuple[GPTModel, torch.utils.data.DataLoader, torch.utils.data.DataLoader, TrainConfig]:
    torch.manual_seed(0)
    model = GPTModel(TINY)
    ids = torch.randint(
        0, TINY.vocab_size, (16 * 24 + 1,), generator=torch.Generator().manual_seed(1)
    )
    train_ds = SlidingWindowDataset(ids[: 16 * 16 + 1], max_length=16, stride=16)  # 16 windows
    val_ds = SlidingWindowDataset(ids[16 * 16 :], max_length=16, stride=16)  # 8 windows
    batch = GLOBAL_BATCH // world_size
    train_loader = torch.utils.data.DataLoader(
        train_ds, batch_size=batch, shuffle=True, drop_last=True
    )
    val_loader = torch.utils.data.DataLoader(val_ds, batch_size=batch)
    cfg = TrainConfig(
        max_steps=STEPS,
        lr=1e-2,
        warmup_steps=2,
        eval_every=3,
        eval_batches=None,
        device="cpu",
        progress=False,
    )
    return model, train_loader, val_loader, cfg


if __name__ == "__main__":
    info = dist_info()
    model, train_loader, val_loader, cfg = setup(info.world_size)
    cfg = dataclasses.replace(cfg, checkpoint_path=sys.argv[1] + ".ckpt")  # rank 0 writes it
    cfg = dataclasses.replace(cfg, compile=sys.argv[2:] == ["compile"])
    history = train(model, train_loader, val_loader, cfg)
    if info.is_main:
        torch.save(model.state_dict(), sys.argv[1] + ".pt")
        with open(sys.argv[1], "w") as f:
            json.dump({"world_size": info.world_size, "history": history.to_dict()}, f)
