import dataclasses
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from gpt2lib import GPTConfig, GPTModel
from gpt2lib.checkpoint import History, RunState, load_checkpoint, save_checkpoint
from gpt2lib.data.text import SlidingWindowDataset
from gpt2lib.distributed import EpochSampler
from gpt2lib.files import FileFormatError
from gpt2lib.loss import calc_loss_batch, calc_loss_kept, calc_loss_loader, lm_loss, perplexity
from gpt2lib.train import TrainConfig, build_optimizer, lr_at, train

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))
import ddp_train  # noqa: E402

TINY = GPTConfig.tiny()


def tiny_model(seed: int = 0, **overrides: object) -> GPTModel:
    torch.manual_seed(seed)
    cfg = GPTConfig.tiny(**overrides)
    return GPTModel(cfg)


def loaders(n_windows: int = 12, batch_size: int = 2, max_length: int = 8):
    ids = torch.randint(0, TINY.vocab_size, (max_length * (n_windows + 4) + 1,))
    cut = max_length * n_windows + 1
    train_ds = SlidingWindowDataset(ids[:cut], max_length, max_length)
    val_ds = SlidingWindowDataset(ids[cut - 1 :], max_length, max_length)
    assert len(train_ds) == n_windows
    return (
        DataLoader(train_ds, batch_size=batch_size, shuffle=True, drop_last=True),
        DataLoader(val_ds, batch_size=batch_size),
    )


def quiet(**kwargs: object) -> TrainConfig:
    return TrainConfig(**{"device": "cpu", "progress": False, **kwargs})  # type: ignore[arg-type]


# --- loss and perplexity ----------------------------------------------------------------------


def test_untrained_loss_is_about_ln_vocab():
    model = tiny_model().eval()
    inputs = torch.randint(0, 100, (4, 16))
    targets = torch.randint(0, 100, (4, 16))
    with torch.no_grad():
        loss = calc_loss_batch(model, (inputs, targets), "cpu").item()
    assert loss == pytest.approx(math.log(100), abs=0.05)  # near-uniform predictions
    assert perplexity(loss) == pytest.approx(100, rel=0.06)


def test_lm_loss_ignores_masked_targets_and_checks_shapes():
    logits = torch.randn(2, 3, 5)
    targets = torch.tensor([[1, 2, -100], [0, -100, -100]])
    expected = -torch.stack(
        [torch.log_softmax(logits[b, t], -1)[targets[b, t]] for b, t in [(0, 0), (0, 1), (1, 0)]]
    ).mean()
    assert torch.allclose(lm_loss(logits, targets), expected)
    with pytest.raises(ValueError, match="logits"):
        lm_loss(logits, targets[:, :2])


def test_kept_loss_equals_the_full_loss_and_its_gradient():
    torch.manual_seed(0)
    model = tiny_model().eval()
    inputs = torch.randint(0, 100, (3, 12))
    targets = torch.randint(0, 100, (3, 12))
    targets[0, :7] = -100  # a masked prompt
    targets[1, 9:] = -100  # padding
    losses, grads = [], []
    for loss_fn in (calc_loss_batch, calc_loss_kept):
        model.zero_grad()
        loss = loss_fn(model, (inputs, targets), "cpu")
        loss.backward()
        losses.append(loss.item())
        grads.append(model.h[0].attn.c_attn.weight.grad.clone())
    assert losses[0] == pytest.approx(losses[1], rel=1e-6)
    assert torch.allclose(grads[0], grads[1], atol=1e-6)
    # the logits it computes are the kept positions' rows of the full logits, in order
    keep = targets != -100
    with torch.no_grad():
        assert torch.allclose(model.head(model.hidden(inputs)[keep]), model(inputs)[keep], atol=1e-5)


def test_perplexity_of_float_and_tensor():
    assert perplexity(0.0) == 1.0
    assert perplexity(math.log(50257)) == pytest.approx(50257)
    assert torch.allclose(perplexity(torch.tensor([0.0, 1.0])), torch.tensor([1.0, math.e]))


def test_calc_loss_loader_limits_batches_and_restores_mode():
    model = tiny_model(drop_rate=0.5)
    train_loader, _ = loaders()
    batches = list(train_loader)
    first = calc_loss_batch(model.eval(), batches[0], "cpu").item()
    model.train()
    assert calc_loss_loader(model, batches, "cpu", num_batches=1) == pytest.approx(first)
    assert model.training  # evaluated in eval mode, then put back
    assert math.isnan(calc_loss_loader(model, [], "cpu"))
    with pytest.raises(ValueError, match="num_batches"):
        calc_loss_loader(model, batches, "cpu", num_batches=0)


# --- schedule, config, optimizer --------------------------------------------------------------


def test_lr_schedule_warmup_then_cosine():
    cfg = TrainConfig(max_steps=110, lr=1e-3, min_lr=1e-4, warmup_steps=10)
    assert lr_at(0, cfg) == pytest.approx(1e-4)  # (0 + 1) / 10 of the peak
    assert lr_at(4, cfg) == pytest.approx(5e-4)
    assert lr_at(9, cfg) == pytest.approx(1e-3)  # warmup ends at the peak
    assert lr_at(10, cfg) == pytest.approx(1e-3)  # cosine starts at the peak ...
    assert lr_at(60, cfg) == pytest.approx(0.5 * (1e-3 + 1e-4))  # ... halfway ...
    assert 1e-4 < lr_at(109, cfg) < 1.01e-4  # ... the last step just above min_lr ...
    assert lr_at(110, cfg) == pytest.approx(1e-4)  # ... which it reaches at the end
    lrs = [lr_at(s, cfg) for s in range(10, 110)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:], strict=False))


def test_lr_constant_schedule_and_errors():
    cfg = TrainConfig(epochs=1, lr=2e-4, warmup_steps=2, schedule="constant")
    assert [lr_at(s, cfg, total_steps=5) for s in range(5)] == pytest.approx(
        [1e-4, 2e-4, 2e-4, 2e-4, 2e-4]
    )
    with pytest.raises(ValueError, match="total_steps"):
        lr_at(0, cfg)
    with pytest.raises(ValueError, match="step"):
        lr_at(-1, cfg, total_steps=5)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({}, "max_steps or epochs"),
        ({"max_steps": 0}, "max_steps"),
        ({"max_steps": 5, "lr": 1e-3, "min_lr": 1e-2}, "min_lr"),
        ({"max_steps": 5, "warmup_steps": -1}, "warmup_steps"),
        ({"max_steps": 5, "schedule": "linear"}, "schedule"),
        ({"max_steps": 5, "grad_clip": 0.0}, "grad_clip"),
        ({"max_steps": 5, "dtype": "float16"}, "dtype"),
        ({"max_steps": 5, "eval_every": 0}, "eval_every"),
    ],
)
def test_train_config_rejects_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**kwargs)


def test_total_steps_from_steps_and_epochs():
    assert TrainConfig(epochs=3).total_steps(7) == 21
    assert TrainConfig(max_steps=10, epochs=3).total_steps(7) == 10
    assert TrainConfig(max_steps=30, epochs=3).total_steps(7) == 21


def test_optimizer_decays_matrices_only_and_skips_frozen():
    model = tiny_model(tie_embeddings=True)
    model.h[0].requires_grad_(False)
    opt = build_optimizer(model, TrainConfig(max_steps=1, weight_decay=0.1))
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.dim() >= 2 for p in decay["params"])
    assert all(p.dim() == 1 for p in no_decay["params"])
    ids = [id(p) for g in opt.param_groups for p in g["params"]]
    assert len(ids) == len(set(ids))  # the tied embedding appears once
    assert not {id(p) for p in model.h[0].parameters()} & set(ids)
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert len(ids) == len(trainable)
    model.requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable"):
        build_optimizer(model, TrainConfig(max_steps=1))


# --- the loop ---------------------------------------------------------------------------------


def test_training_steps_reduce_the_loss_on_one_batch():
    model = tiny_model()
    batch = (torch.randint(0, 100, (2, 8)), torch.randint(0, 100, (2, 8)))
    before = calc_loss_batch(model, batch, "cpu").item()
    history = train(model, [batch], [batch], quiet(max_steps=5, lr=1e-2, eval_every=1))
    after = calc_loss_batch(model, batch, "cpu").item()
    assert after < before - 0.5
    assert history.steps == [0, 1, 2, 3, 4, 5]
    assert history.tokens_seen == [0, 16, 32, 48, 64, 80]
    assert history.examples_seen[-1] == 10
    assert history.val_loss[0] == pytest.approx(before, abs=1e-5)
    assert history.val_loss[-1] == pytest.approx(after, abs=1e-5)


def test_gradients_are_clipped():
    def grad_norm(clip: float | None) -> float:
        model = tiny_model()
        batch = (torch.randint(0, 100, (2, 8)), torch.randint(0, 100, (2, 8)))
        train(model, [batch], None, quiet(max_steps=1, grad_clip=clip, eval_at_start=False))
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        return torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])).item()

    assert grad_norm(None) > 0.1  # the gradients left after the step are the clipped ones
    assert grad_norm(0.1) == pytest.approx(0.1, rel=1e-4)


def test_only_trainable_parameters_change():
    model = tiny_model()
    model.requires_grad_(False)
    model.ln_f.requires_grad_(True)  # like a frozen base with a small trainable part
    frozen = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("ln_f")}
    ln_f = model.ln_f.weight.detach().clone()
    train_loader, val_loader = loaders()
    train(model, train_loader, val_loader, quiet(max_steps=3, lr=1e-2, weight_decay=0.5))
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in frozen.items())
    assert not torch.equal(model.ln_f.weight, ln_f)


def test_history_lr_and_eval_fn_metrics():
    def accuracy(model, batches, device):
        hits = total = 0
        for inputs, targets in batches:
            hits += (model(inputs.to(device)).argmax(-1) == targets.to(device)).sum().item()
            total += targets.numel()
        return {"acc": hits / total}

    train_loader, val_loader = loaders()
    cfg = quiet(epochs=2, lr=1e-3, warmup_steps=2, eval_every=4)
    history = train(tiny_model(), train_loader, val_loader, cfg, eval_fn=accuracy)
    assert history.steps == [0, 4, 8, 12]  # 6 batches per epoch, the last step always recorded
    assert history.lr == pytest.approx([lr_at(s, cfg, 12) for s in (0, 3, 7, 11)])
    assert set(history.metrics) == {"train_acc", "val_acc"}
    assert all(0.0 <= a <= 1.0 for a in history.metrics["val_acc"])


def test_history_round_trips_through_strict_json():
    h = History([0, 5], [0, 40], [0, 5], [4.6, 4.0], [float("nan"), 4.2], [1e-4, 1e-3])
    h.metrics["val_acc"] = [0.5, float("nan")]
    text = json.dumps(h.to_dict(), allow_nan=False)
    back = History.from_dict(json.loads(text))
    assert back.steps == h.steps and back.train_loss == h.train_loss
    assert math.isnan(back.val_loss[0]) and back.val_loss[1] == 4.2
    assert math.isnan(back.metrics["val_acc"][1])


def test_bfloat16_autocast_trains():
    train_loader, val_loader = loaders()
    history = train(tiny_model(), train_loader, val_loader, quiet(max_steps=2, dtype="bfloat16"))
    assert all(math.isfinite(v) for v in history.val_loss)


# --- checkpoints and resuming -----------------------------------------------------------------


def test_checkpoint_round_trip_and_errors(tmp_path):
    model = tiny_model()
    opt = build_optimizer(model, TrainConfig(max_steps=1))
    path = save_checkpoint(tmp_path / "ck" / "a.pt", model, opt, RunState(step=7, history=History([7])))
    assert sorted(p.name for p in path.parent.iterdir()) == ["a.pt"]  # no temporary left over
    other = tiny_model(seed=1)
    ckpt = load_checkpoint(path, other, build_optimizer(other, TrainConfig(max_steps=1)))
    assert ckpt.state.step == 7 and ckpt.state.history.steps == [7]
    assert ckpt.model_config["emb_dim"] == TINY.emb_dim
    assert all(
        torch.equal(a, b) for a, b in zip(model.parameters(), other.parameters(), strict=True)
    )
    with pytest.raises(ValueError, match="does not fit"):
        load_checkpoint(path, tiny_model(emb_dim=64))
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.pt", model)


class Interrupt(Exception):
    pass


def test_resumed_run_equals_uninterrupted_run(tmp_path):
    """Dropout, a shuffled loader and an epoch boundary: resuming must still be exact."""
    torch.manual_seed(5)
    train_loader, val_loader = loaders(n_windows=12, batch_size=2)  # 6 steps per epoch
    cfg = quiet(
        max_steps=10, lr=5e-3, warmup_steps=2, eval_every=3, checkpoint_every=2,
        checkpoint_path=str(tmp_path / "run.pt"),
    )  # fmt: skip

    reference = tiny_model(drop_rate=0.2)
    expected = train(reference, train_loader, val_loader, cfg)

    def stop_at(step_to_stop: int):
        def on_step(step: int, history: History) -> None:
            if step == step_to_stop:
                raise Interrupt

        return on_step

    (tmp_path / "run.pt").unlink()
    model = tiny_model(drop_rate=0.2)
    with pytest.raises(Interrupt):  # dies after step 5: the checkpoint of step 4 survives
        train(model, train_loader, val_loader, cfg, on_step=stop_at(5))
    model = tiny_model(seed=99, drop_rate=0.2)  # a fresh process: other weights, other RNG
    with pytest.raises(Interrupt):  # dies after step 7: step 6 ended epoch 0
        train(model, train_loader, val_loader, cfg, resume=True, on_step=stop_at(7))
    model = tiny_model(seed=98, drop_rate=0.2)
    torch.rand(10)
    history = train(model, train_loader, val_loader, cfg, resume=True)

    assert history.to_dict() == expected.to_dict()
    for (name, a), b in zip(
        reference.state_dict().items(), model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name


def test_epoch_sampler_shards_cover_the_unsharded_order():
    whole = EpochSampler(10, shuffle=True, seed=3)
    whole.set_epoch(2)
    shards = [EpochSampler(10, shuffle=True, seed=3, rank=r, world_size=2) for r in range(2)]
    for s in shards:
        s.set_epoch(2)
    order = whole.indices()
    assert sorted(order) == list(range(10))
    assert shards[0].indices() == order[0::2] and shards[1].indices() == order[1::2]
    whole.set_epoch(3)
    assert whole.indices() != order  # a new order each epoch
    whole.set_start(4)
    assert len(whole) == 6 and len(whole.indices()) == 6
    odd = [EpochSampler(5, shuffle=False, rank=r, world_size=2) for r in range(2)]
    assert [o.indices() for o in odd] == [[0, 2, 4], [1, 3, 0]]  # padded to equal shares


# --- data parallel ----------------------------------------------------------------------------


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_two_process_ddp_matches_one_process(tmp_path, compiled):
    out = tmp_path / "ddp.json"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(TESTS.parent), str(TESTS)]),
        "OMP_NUM_THREADS": "1",
        "GPT2LIB_TEST_INDUCTOR_CACHE": str(tmp_path / "inductor"),  # per rank, fresh: no races
    }
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        str(TESTS / "ddp_train.py"), str(out), *(["compile"] if compiled else []),
    ]  # fmt: skip
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["world_size"] == 2
    ddp_history = History.from_dict(result["history"])

    model, train_loader, val_loader, cfg = ddp_train.setup(world_size=1)
    history = train(model, train_loader, val_loader, dataclasses.replace(cfg, compile=compiled))
    assert ddp_history.steps == history.steps == [0, 3, 6]
    assert ddp_history.tokens_seen == history.tokens_seen  # the same global batches
    assert ddp_history.train_loss == pytest.approx(history.train_loss, abs=1e-5)
    assert ddp_history.val_loss == pytest.approx(history.val_loss, abs=1e-5)
    ckpt = load_checkpoint(str(out) + ".ckpt", model)  # written by rank 0 alone
    assert ckpt.state.step == 6 and len(ckpt.rng_states) == 2  # each process's random state
    assert ckpt.state.tokens_seen == history.tokens_seen[-1]
    ddp_state = torch.load(str(out) + ".pt", weights_only=True)
    for name, value in model.state_dict().items():
        assert torch.allclose(ddp_state[name], value, atol=1e-4), name


# --- resuming checks what it resumes (probes of the hardening pass) ---------------------------


def _resumable_run(tmp_path, **overrides):
    torch.manual_seed(5)
    train_loader, val_loader = loaders(n_windows=12, batch_size=2)
    cfg = quiet(max_steps=4, checkpoint_every=2, checkpoint_path=str(tmp_path / "r.pt"))
    train(tiny_model(), train_loader, val_loader, cfg)
    return cfg


def test_resume_rejects_other_heads_with_equal_shapes(tmp_path):
    """Probe: n_heads 2 -> 4 has the same tensor shapes and resumed silently."""
    cfg = _resumable_run(tmp_path)
    train_loader, val_loader = loaders()
    model = tiny_model(n_heads=2)
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(ValueError, match=r"n_heads: 4 in the checkpoint, 2 now"):
        train(model, train_loader, val_loader, dataclasses.replace(cfg, max_steps=6), resume=True)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_untied_checkpoint_is_not_loaded_into_a_tied_model(tmp_path):
    """Probe: an untied checkpoint loaded into a tied model put its lm_head into wte."""
    path = save_checkpoint(tmp_path / "u.pt", tiny_model(tie_embeddings=False))
    tied = tiny_model(seed=3, tie_embeddings=True)
    wte = tied.wte.weight.detach().clone()
    with pytest.raises(ValueError, match=r"tie_embeddings: False in the checkpoint, True now"):
        load_checkpoint(path, tied)
    assert torch.equal(tied.wte.weight, wte)


def test_resume_rejects_another_batch_size_and_learning_rate(tmp_path):
    """Probe: a different batch size silently skipped examples of the resumed epoch."""
    cfg = _resumable_run(tmp_path)
    train_loader, val_loader = loaders(n_windows=12, batch_size=3)
    with pytest.raises(ValueError, match=r"batch_size: 2 in the checkpoint, 3 now"):
        train(tiny_model(), train_loader, val_loader, cfg, resume=True)
    train_loader, val_loader = loaders(n_windows=12, batch_size=2)
    changed = dataclasses.replace(cfg, lr=1e-3, seed=7)
    with pytest.raises(ValueError, match=r"lr: 0.0004 in the checkpoint, 0.001 now; seed: 123"):
        train(tiny_model(), train_loader, val_loader, changed, resume=True)
    longer = dataclasses.replace(cfg, max_steps=6, eval_every=3)  # deliberate: allowed
    assert train(tiny_model(), train_loader, val_loader, longer, resume=True).steps[-1] == 6


def test_load_checkpoint_with_wrong_optimizer_leaves_the_model_alone(tmp_path):
    """Probe: a mismatching optimizer raised only after the model's weights were overwritten."""
    model = tiny_model()
    path = save_checkpoint(
        tmp_path / "o.pt", model, build_optimizer(model, TrainConfig(max_steps=1))
    )
    other = tiny_model(seed=1)
    for p in other.h[0].parameters():
        p.requires_grad_(False)  # fewer trainable parameters: another optimizer layout
    before = [p.detach().clone() for p in other.parameters()]
    with pytest.raises(ValueError, match=r"o\.pt: its optimizer has parameter groups of sizes"):
        load_checkpoint(path, other, build_optimizer(other, TrainConfig(max_steps=1)))
    assert all(torch.equal(a, b) for a, b in zip(before, other.parameters(), strict=True))


@pytest.mark.parametrize(
    "content",
    [b"", b"hello, I am a text file\n", bytes(range(256)) * 4, b"PK\x03\x04 truncated zip"],
    ids=["empty", "text", "garbage", "truncated-zip"],
)
def test_unreadable_checkpoint_names_the_file(tmp_path, content):
    """Probe: OSError / KeyError: 101 / an UnpicklingError recommending weights_only=False."""
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    with pytest.raises(FileFormatError, match=r"bad\.pt: not a readable gpt2lib training") as err:
        load_checkpoint(path, tiny_model())
    assert "weights_only" not in str(err.value)


def test_truncated_checkpoint_names_the_file(tmp_path):
    path = save_checkpoint(tmp_path / "t.pt", tiny_model())
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(FileFormatError, match=r"t\.pt: not a readable gpt2lib training"):
        load_checkpoint(path, tiny_model())


def test_stale_checkpoint_temporary_of_a_killed_save_is_removed(tmp_path):
    """Probe: kill -9 during save_checkpoint left a full-size .ck.pt.<pid>.tmp forever."""
    script = (
        "import os, sys, torch; sys.path.insert(0, {!r})\n"
        "from gpt2lib import GPTConfig, GPTModel\n"
        "from gpt2lib.checkpoint import save_checkpoint\n"
        "real = torch.save\n"
        "def dying(obj, f):\n"
        "    real(obj, f); os.kill(os.getpid(), 9)\n"
        "torch.save = dying\n"
        "save_checkpoint({!r}, GPTModel(GPTConfig(vocab_size=100, context_length=8, emb_dim=8,"
        " n_heads=2, n_layers=1)))\n"
    ).format(str(TESTS.parent), str(tmp_path / "ck.pt"))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True)
    assert proc.returncode == -9
    leftovers = [p.name for p in tmp_path.iterdir()]
    assert len(leftovers) == 1 and leftovers[0].startswith(".ck.pt.") and "tmp" in leftovers[0]
    save_checkpoint(tmp_path / "ck.pt", tiny_model())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck.pt"]


def test_train_without_schedule_and_clipping_is_the_plain_loop():
    """Oracle: chapter 3's hand-written loop and train() compute the same run, bit for bit."""
    torch.manual_seed(5)
    ids = torch.randint(0, TINY.vocab_size, (8 * 20 + 1,))
    train_loader = DataLoader(
        SlidingWindowDataset(ids, 8, 8), batch_size=2, generator=torch.Generator()
    )
    val_loader = DataLoader(
        SlidingWindowDataset(ids[:41], 8, 8), batch_size=2, generator=torch.Generator()
    )
    cfg = quiet(
        epochs=2, lr=5e-3, schedule="constant", grad_clip=None, eval_every=4, eval_batches=2
    )
    plain, library = tiny_model(drop_rate=0.2), tiny_model(drop_rate=0.2)

    torch.manual_seed(cfg.seed)
    optimizer, losses, step = build_optimizer(plain, cfg), [], 0
    for _ in range(cfg.epochs):
        plain.train()
        for inputs, targets in train_loader:
            loss = calc_loss_batch(plain, (inputs, targets), "cpu")
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            step += 1
            if step % cfg.eval_every == 0:
                losses.append(calc_loss_loader(plain, val_loader, "cpu", num_batches=2))

    history = train(library, train_loader, val_loader, cfg)
    assert history.val_loss[1:] == losses  # [0] is the evaluation before the first step
    assert all(torch.equal(a, b) for a, b in zip(plain.parameters(), library.parameters(), strict=True))


# --- compiled training and the fused optimizer --------------------------------------------


def test_compile_and_fused_switches_follow_the_device():
    cfg = quiet(max_steps=1)
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert not cfg.switch("compile", cpu) and cfg.switch("compile", cuda)
    assert not cfg.switch("fused_optimizer", cpu) and cfg.switch("fused_optimizer", cuda)
    forced = quiet(max_steps=1, compile=True, fused_optimizer=False)
    assert forced.switch("compile", cpu) and not forced.switch("fused_optimizer", cuda)
    with pytest.raises(ValueError, match="compile"):
        quiet(max_steps=1, compile="yes")
    fused = build_optimizer(tiny_model(), quiet(max_steps=1, fused_optimizer=True))
    assert fused.defaults["fused"] is True
    assert build_optimizer(tiny_model(), quiet(max_steps=1)).defaults["fused"] is None


def test_compiled_training_matches_eager_and_resumes_exactly(tmp_path):
    """torch.compile'd steps give the eager losses (to float tolerance), and an interrupted
    compiled run resumes to exactly the uninterrupted compiled run."""
    torch.manual_seed(5)
    train_loader, val_loader = loaders(n_windows=12, batch_size=2)
    cfg = quiet(max_steps=6, lr=5e-3, eval_every=2, checkpoint_every=2,
                checkpoint_path=str(tmp_path / "c.pt"), compile=True, fused_optimizer=True)  # fmt: skip
    eager = train(tiny_model(), train_loader, val_loader,
                  dataclasses.replace(cfg, compile=False, checkpoint_path=None))  # fmt: skip
    reference = tiny_model()
    expected = train(reference, train_loader, val_loader, cfg)
    assert expected.train_loss == pytest.approx(eager.train_loss, abs=1e-4)
    (tmp_path / "c.pt").unlink()

    def stop_at_3(step: int, history: History) -> None:
        if step == 3:
            raise Interrupt

    with pytest.raises(Interrupt):
        train(tiny_model(), train_loader, val_loader, cfg, on_step=stop_at_3)
    model = tiny_model(seed=99)
    assert train(model, train_loader, val_loader, cfg, resume=True).to_dict() == expected.to_dict()
    for (name, a), b in zip(reference.state_dict().items(), model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name  # plain names in the checkpoint: no "_orig_mod." prefix
