"""Chapter 6's recipe as library calls: the loaders, the tuning run, the responses file."""

from __future__ import annotations

import dataclasses
import json

import torch

from gpt2lib import GPTConfig, GPTModel
from gpt2lib.data.instructions import load_instructions, split_instructions
from gpt2lib.instruction_tuning import (
    Recipe,
    generate_responses,
    instruction_loaders,
    instruction_tune,
    make_responses_file,
    make_task_responses_file,
)
from gpt2lib.loss import calc_loss_loader


def test_recipes_of_the_two_profiles():
    book = Recipe()
    assert (book.model, book.train_records, book.epochs, book.lr) == ("355M", None, 2, 5e-5)
    cfg = book.train_config()
    assert cfg.schedule == "constant" and cfg.grad_clip is None and cfg.weight_decay == 0.1
    mini = Recipe.mini()
    assert (mini.model, mini.epochs, mini.mask_prompt) == ("mini-shakespeare", 8, True)


def test_task_recipes_of_the_two_profiles():
    book = Recipe.tasks()
    assert (book.model, book.epochs, book.lr, book.max_new_tokens) == ("355M", 1, 5e-5, 16)
    mini = Recipe.mini_tasks()
    assert (mini.model, mini.max_steps, mini.batch_size, mini.lr) == ("mini-shakespeare", 3000, 16, 3e-3)
    assert mini.epochs * (800 * 9 // mini.batch_size) >= mini.max_steps  # the steps, not the epochs, end it
    cfg = mini.train_config()
    assert (cfg.schedule, cfg.min_lr, cfg.grad_clip) == ("cosine", 3e-4, 1.0) and mini.mask_prompt


def test_instruction_tune_lowers_the_validation_loss():
    train_data, val_data, _ = split_instructions(load_instructions())
    torch.manual_seed(0)
    model = GPTModel(GPTConfig(vocab_size=50257, context_length=256, emb_dim=32, n_heads=2, n_layers=1))
    recipe = Recipe(train_records=32, epochs=2, lr=1e-2, eval_every=4, eval_batches=2)
    train_loader, val_loader = instruction_loaders(train_data, val_data[:16], recipe, 256)
    assert len(train_loader) == 4 and len(val_loader) == 2  # 32 records, batches of 8
    before = calc_loss_loader(model, val_loader, "cpu")
    history = instruction_tune(model, train_data, val_data[:16], recipe, progress=False)
    assert history.steps == [0, 4, 8] and history.val_loss[-1] < before - 1.0


def test_make_responses_file_is_chapter_6_in_one_call(tmp_path):
    recipe = dataclasses.replace(
        Recipe.mini(), train_records=16, epochs=1, max_new_tokens=3, eval_every=100
    )
    path = make_responses_file(tmp_path / "responses.json", recipe, device="cpu", progress=False)
    saved = json.loads(path.read_text())
    test_data = split_instructions(load_instructions())[2]
    assert [{k: r[k] for k in ("instruction", "input", "output")} for r in saved] == test_data
    assert all(isinstance(r["model_response"], str) for r in saved)


def test_make_task_responses_file_answers_before_and_after(tmp_path):
    from gpt2lib.data.tasks import make_splits

    recipe = dataclasses.replace(
        Recipe.mini_tasks(), max_steps=2, max_new_tokens=3, eval_every=100, eval_batches=1
    )
    path = make_task_responses_file(tmp_path / "tasks.json", recipe, device="cpu", progress=False)
    saved = json.loads(path.read_text())
    test = make_splits()[2]
    assert [{k: r[k] for k in ("instruction", "input", "output", "kind")} for r in saved] == test
    assert list(saved[0]) == ["instruction", "input", "output", "kind", "model_response", "base_response"]
    assert all(isinstance(r["base_response"], str) for r in saved)


def test_responses_record_which_answers_ended_at_end_of_text():
    torch.manual_seed(0)
    model = GPTModel(GPTConfig(vocab_size=50257, context_length=128, emb_dim=32, n_heads=4, n_layers=2))
    records = split_instructions(load_instructions())[2][:3]
    free = generate_responses(model, records, max_new_tokens=4)
    assert free.stopped == [False, False, False] and list(free) == [str(r) for r in free]
    with torch.no_grad():  # make end-of-text the only token the model ever writes
        model.lm_head.weight.zero_()
        model.lm_head.weight[50256] = 1.0
        model.ln_f.weight.fill_(1.0)
        model.ln_f.bias.fill_(1.0)
    stopped = generate_responses(model, records, max_new_tokens=4)
    assert stopped.stopped == [True, True, True] and list(stopped) == ["", "", ""]
