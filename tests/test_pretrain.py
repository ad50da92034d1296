"""gpt2lib.pretrain: the committed mini GPT-2, its manifest, and saving/loading it."""

import math
import shutil

import pytest
import torch

from gpt2lib import GPTConfig, GPTModel
from gpt2lib.data.text import TEXTS
from gpt2lib.pretrain import (
    MINI_CONFIG,
    MINI_NAME,
    PRETRAINED_DIR,
    _command,
    _downsample,
    _parser,
    load_mini,
    read_manifest,
    save_mini,
    sha256_file,
)
from gpt2lib.train import lm_loss

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


def test_committed_weights_match_the_manifest(manifest):
    weights = MINI_DIR / manifest["weights"]["file"]
    assert sha256_file(weights) == manifest["weights"]["sha256"]
    assert weights.stat().st_size == manifest["weights"]["bytes"] <= 16 * 2**20
    assert manifest["corpus"]["sha256"] == TEXTS["tiny-shakespeare"].sha256
    assert manifest["command"].startswith("python -m gpt2lib.pretrain ")


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


def test_load_mini_rejects_a_corrupted_file(tmp_path, manifest):
    copy = tmp_path / MINI_NAME
    shutil.copytree(MINI_DIR, copy)
    weights = copy / manifest["weights"]["file"]
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="sha256"):
        load_mini(copy)
    with pytest.raises(FileNotFoundError, match="manifest"):
        load_mini(tmp_path)


def test_save_and_load_round_trip_in_float16(tmp_path):
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=100, context_length=16, emb_dim=32, n_heads=4, n_layers=2)
    for tied in (True, False):
        model = GPTModel(GPTConfig(**{**cfg.__dict__, "tie_embeddings": tied}))
        out = save_mini(model, tmp_path / str(tied), {"name": "tiny", "config": cfg.__dict__ | {
            "tie_embeddings": tied}})  # fmt: skip
        back = load_mini(out)
        for (name, a), b in zip(
            model.state_dict().items(), back.state_dict().values(), strict=True
        ):
            assert torch.equal(a.half().float(), b), name
        assert (back.lm_head.weight is back.wte.weight) == tied


def test_command_spells_out_every_setting_and_downsampling_keeps_ends():
    args = _parser().parse_args(["--out", "somewhere", "--lr", "0.001"])
    command = _command(args)
    assert "--out somewhere" in command and "--lr 0.001" in command
    assert "--max-steps" in command and "--seed 123" in command
    history = {"steps": list(range(1000)), "val_loss": [float(i) for i in range(1000)]}
    small = _downsample(history, max_points=50)
    assert len(small["steps"]) == 50 and small["steps"][0] == 0 and small["steps"][-1] == 999
    assert small["val_loss"] == [float(s) for s in small["steps"]]
