"""gpt2lib.mini and tools.pretrain: the committed mini GPT-2, its manifest, saving/loading it,
and the pretraining command that made it."""

import json
import math
import shlex
import shutil
from dataclasses import replace

import pytest
import torch

from gpt2lib import GPTConfig, GPTModel
from gpt2lib.data.text import TEXTS
from gpt2lib.files import FileFormatError
from gpt2lib.loss import lm_loss
from gpt2lib.mini import MINI_CONFIG, MINI_NAME, PRETRAINED_DIR, load_mini, read_manifest, save_mini
from gpt2lib.saving import load_model_config
from tools.pretrain import PretrainSettings, _downsample, parse_args

MINI_DIR = PRETRAINED_DIR / MINI_NAME
# GPT-2 token IDs of "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\n
# Speak, speak.\n", the opening of Tiny Shakespeare
OPENING = [5962, 22307, 25, 198, 8421, 356, 5120, 597, 2252, 11, 3285, 502, 2740, 13, 198, 198]
OPENING += [3237, 25, 198, 5248, 461, 11, 2740, 13, 198]


@pytest.fixture(scope="module")
def manifest():
    return read_manifest()


@pytest.fixture(scope="module")
def mini():
    return load_mini()


def test_committed_model_is_a_saved_model_with_its_manifest(manifest):
    config = load_model_config(MINI_DIR)  # the one save format: saving.save_model
    assert config["extra"] == manifest and config["gpt_config"] == MINI_CONFIG.__dict__
    assert sorted(p.name for p in MINI_DIR.iterdir()) == ["config.json", "model.safetensors"]
    assert (MINI_DIR / "model.safetensors").stat().st_size <= 16 * 2**20  # float16
    assert manifest["corpus"]["sha256"] == TEXTS["tiny-shakespeare"].sha256
    # recorded when the command lived in the package; tools.pretrain takes the same flags
    assert manifest["command"].startswith("python -m gpt2lib.pretrain ")
    flags = shlex.split(manifest["command"])[3:]
    assert shlex.split(parse_args(flags).command())[3:] == flags


def test_manifest_records_a_model_that_learned(manifest):
    final = manifest["final"]
    assert final["val_loss"] <= 5.2
    assert final["val_perplexity"] == pytest.approx(math.exp(final["val_loss"]), rel=1e-3)
    history = manifest["history"]
    assert history["steps"][-1] == manifest["training"]["steps"]
    assert history["tokens_seen"][-1] == manifest["training"]["tokens"]
    assert history["val_loss"][0] > 10.0 > 6.0 > history["val_loss"][-1]  # from ~ln(50257)
    assert len({len(v) for v in history.values() if isinstance(v, list)}) == 1


def test_load_mini_gives_the_float32_model_in_eval_mode(mini, manifest):
    assert isinstance(mini, GPTModel) and not mini.training
    assert mini.cfg == MINI_CONFIG == GPTConfig(**manifest["config"])
    assert mini.lm_head.weight is mini.wte.weight  # tied, as GPT-2
    assert all(p.dtype == torch.float32 for p in mini.parameters())
    assert sum(p.numel() for p in mini.parameters()) == manifest["parameters"] == 7_259_008


def test_mini_predicts_shakespeare_far_better_than_chance(mini):
    ids = torch.tensor([OPENING])
    with torch.no_grad():
        logits = mini(ids[:, :-1])
    assert torch.isfinite(logits).all()
    loss = lm_loss(logits, ids[:, 1:]).item()
    assert loss < 6.0 < math.log(MINI_CONFIG.vocab_size)


def test_load_mini_rejects_a_corrupted_file(tmp_path):
    copy = tmp_path / MINI_NAME
    shutil.copytree(MINI_DIR, copy)
    weights = copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(FileFormatError, match="checksum"):
        load_mini(copy)
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_mini(tmp_path)


def test_save_and_load_round_trip_in_float16(tmp_path):
    torch.manual_seed(0)
    for tied in (True, False):
        model = GPTModel(GPTConfig.tiny(vocab_size=100, context_length=16, tie_embeddings=tied))
        out = save_mini(model, tmp_path / str(tied), {"name": "tiny"})
        assert all(p.dtype == torch.float32 for p in model.parameters())  # left as it was
        back = load_mini(out)
        for (name, a), b in zip(
            model.state_dict().items(), back.state_dict().values(), strict=True
        ):
            assert torch.equal(a.half().float(), b), name
        assert (back.lm_head.weight is back.wte.weight) == tied
        assert read_manifest(out) == {"name": "tiny"}


def test_command_line_fills_typed_settings_and_spells_out_every_setting():
    settings = parse_args(["--out", "somewhere", "--lr", "0.001", "--no-progress"])
    assert settings == PretrainSettings(out="somewhere", lr=0.001, progress=False)
    command = settings.command()
    assert "--out somewhere" in command and "--lr 0.001" in command
    assert "--max-steps 700" in command and "--seed 123" in command
    assert "progress" not in command and "--device" not in command
    assert parse_args(command.split()[3:]) == replace(settings, progress=True)  # it round-trips


def test_downsampling_keeps_ends():
    history = {"steps": list(range(1000)), "val_loss": [float(i) for i in range(1000)]}
    small = _downsample(history, max_points=50)
    assert len(small["steps"]) == 50 and small["steps"][0] == 0 and small["steps"][-1] == 999
    assert small["val_loss"] == [float(s) for s in small["steps"]]


def test_pretrain_runs_end_to_end(tmp_path):
    """Two optimizer steps through the whole path: data, train, save, reload, evaluate, sample."""
    from tools.pretrain import pretrain

    settings = PretrainSettings(
        out=str(tmp_path / "mini"), max_steps=2, batch_size=2, eval_every=1, eval_batches=1,
        dtype="float32", checkpoint=str(tmp_path / "ck.pt"), progress=False,
    )  # fmt: skip
    manifest = pretrain(settings)
    assert json.loads(json.dumps(manifest)) == read_manifest(tmp_path / "mini")  # betas: a list
    assert manifest["training"]["steps"] == 2 and manifest["history"]["steps"] == [0, 1, 2]
    assert manifest["command"] == settings.command() and len(manifest["samples"]) == 4
    assert math.isfinite(manifest["final"]["val_loss"])
    assert load_mini(tmp_path / "mini").cfg == MINI_CONFIG
