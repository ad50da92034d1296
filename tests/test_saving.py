"""save_model / load_model: round trips of plain, classifier and LoRA models; clear errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gpt2lib import GPTConfig, GPTModel
from gpt2lib import saving as saving_module
from gpt2lib.classifier import add_classification_head
from gpt2lib.files import FileFormatError
from gpt2lib.lora import LinearWithLoRA, apply_lora, lora_modules, merge_lora
from gpt2lib.saving import load_model, load_model_config, save_model

TINY = GPTConfig.tiny()
IDX = torch.randint(0, 100, (2, 9), generator=torch.Generator().manual_seed(1))


def tiny_model(**overrides: object) -> GPTModel:
    torch.manual_seed(123)
    return GPTModel(GPTConfig.tiny(**overrides)).eval()


def randomize_lora(model: GPTModel) -> None:
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for _, layer in lora_modules(model):
            layer.lora.B.copy_(torch.randn(layer.lora.B.shape, generator=gen) * 0.1)


def lora_classifier() -> GPTModel:
    model = add_classification_head(tiny_model(), 2, method="lora", rank=4, alpha=8)
    randomize_lora(model)
    return model.eval()


def assert_same_outputs(a: GPTModel, b: GPTModel) -> None:
    with torch.no_grad():
        torch.testing.assert_close(a(IDX), b(IDX), rtol=0, atol=0)


@pytest.mark.parametrize("tie", [False, True])
def test_plain_model_round_trip(tmp_path: Path, tie: bool) -> None:
    model = tiny_model(tie_embeddings=tie)
    assert save_model(model, tmp_path / "m") == tmp_path / "m"
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == [
        "config.json",
        "model.safetensors",
    ]
    loaded = load_model(tmp_path / "m")
    assert loaded.cfg == model.cfg and not loaded.training
    assert (loaded.lm_head.weight is loaded.wte.weight) == tie  # the tie is rebuilt, not copied
    assert_same_outputs(model, loaded)
    config = load_model_config(tmp_path / "m")
    assert config["head"] is None and config["lora"] is None and config["extra"] == {}


def test_lora_classifier_round_trip_with_extra(tmp_path: Path) -> None:
    model = lora_classifier()
    extra = {"labels": ["ham", "spam"], "pool": "last_real", "max_length": 120}
    save_model(model, tmp_path, extra=extra)
    config = load_model_config(tmp_path)
    assert config["head"] == {"num_classes": 2}
    assert config["lora"]["rank"] == 4 and config["lora"]["alpha"] == 8
    assert "lm_head" in config["lora"]["targets"] and config["lora"]["merged"] == []
    assert config["extra"] == extra
    loaded = load_model(tmp_path)
    assert isinstance(loaded.lm_head, LinearWithLoRA)
    assert [n for n, _ in lora_modules(loaded)] == [n for n, _ in lora_modules(model)]
    assert_same_outputs(model, loaded)


def test_merged_lora_round_trip(tmp_path: Path) -> None:
    model = lora_classifier()
    merge_lora(model)
    save_model(model, tmp_path)
    assert len(load_model_config(tmp_path)["lora"]["merged"]) == 4 * TINY.n_layers + 1
    loaded = load_model(tmp_path)
    assert all(m.merged for _, m in lora_modules(loaded))  # the update is not added twice
    assert_same_outputs(model, loaded)


def test_partial_lora_targets_and_bfloat16(tmp_path: Path) -> None:
    model = tiny_model()
    apply_lora(model, rank=2, alpha=4, targets={"c_attn"})
    randomize_lora(model)
    model.to(torch.bfloat16)
    save_model(model, tmp_path)
    loaded = load_model(tmp_path)
    assert loaded.wte.weight.dtype == torch.bfloat16
    assert isinstance(loaded.h[0].attn.c_attn, LinearWithLoRA)
    assert not isinstance(loaded.h[0].mlp.c_fc, LinearWithLoRA)
    assert_same_outputs(model, loaded)


def test_overwrite_leaves_no_temporary_files(tmp_path: Path) -> None:
    save_model(tiny_model(), tmp_path)
    model = lora_classifier()
    save_model(model, tmp_path)  # replaces the first save
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]
    assert_same_outputs(model, load_model(tmp_path))


def test_failed_save_keeps_the_previous_one(tmp_path: Path, monkeypatch) -> None:
    model = tiny_model()
    save_model(model, tmp_path)
    import safetensors.torch

    def broken(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", broken)
    with pytest.raises(OSError, match="disk full"):
        save_model(lora_classifier(), tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]
    assert_same_outputs(model, load_model(tmp_path))


def test_extra_must_be_json(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="JSON"):
        save_model(tiny_model(), tmp_path / "m", extra={"when": object()})
    with pytest.raises(TypeError, match="dict"):
        save_model(tiny_model(), tmp_path / "m", extra=["a"])  # type: ignore[arg-type]
    assert not (tmp_path / "m").exists()
    with pytest.raises(TypeError, match="GPTModel"):
        save_model(torch.nn.Linear(2, 2), tmp_path)  # type: ignore[arg-type]


def _edit_config(directory: Path, edit) -> None:
    path = directory / "config.json"
    config = json.loads(path.read_text())
    edit(config)
    path.write_text(json.dumps(config))


def test_shape_mismatch_names_tensor_and_both_shapes(tmp_path: Path) -> None:
    save_model(lora_classifier(), tmp_path)
    _edit_config(tmp_path, lambda c: c["head"].update(num_classes=3))
    with pytest.raises(
        ValueError, match=r"'lm_head\.linear\.weight' has shape \(2, 32\).*\(3, 32\)"
    ):
        load_model(tmp_path)


def test_structure_mismatch_names_tensors(tmp_path: Path) -> None:
    save_model(lora_classifier(), tmp_path)
    _edit_config(tmp_path, lambda c: c.update(lora=None))
    with pytest.raises(
        ValueError,
        match=r"missing tensors \['h\.0\.attn\.c_attn\.bias'.*unexpected tensors \[.*'h\.0\.attn\.c_attn\.lora\.A'.* and 30 more",
    ):
        load_model(tmp_path)


def test_mixed_saves_load_the_weights_own_config(tmp_path: Path) -> None:
    a = lora_classifier()
    save_model(a, tmp_path / "a")
    save_model(tiny_model(), tmp_path / "b")
    (tmp_path / "a" / "config.json").write_bytes((tmp_path / "b" / "config.json").read_bytes())
    assert load_model_config(tmp_path / "a")["head"] == {"num_classes": 2}  # from the weights
    assert_same_outputs(a, load_model(tmp_path / "a"))


def test_crash_between_the_two_renames_leaves_the_new_model(tmp_path: Path, monkeypatch) -> None:
    """Probe: kill -9 between renaming the weights and the config left neither loadable."""
    old, new = tiny_model(), lora_classifier()
    save_model(old, tmp_path)
    real_replace = os.replace

    def crash_on_config(src, dst):
        if Path(dst).name == "config.json":
            raise KeyboardInterrupt("killed between the renames")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", crash_on_config)
    with pytest.raises(KeyboardInterrupt):
        save_model(new, tmp_path)
    monkeypatch.setattr(os, "replace", real_replace)
    assert_same_outputs(new, load_model(tmp_path))  # the weights carry their own config


def test_first_save_interrupted_before_config_still_loads(tmp_path: Path, monkeypatch) -> None:
    model = lora_classifier()
    real_replace = os.replace
    monkeypatch.setattr(
        os, "replace",
        lambda s, d: (_ for _ in ()).throw(KeyboardInterrupt) if Path(d).name == "config.json"
        else real_replace(s, d),
    )  # fmt: skip
    with pytest.raises(KeyboardInterrupt):
        save_model(model, tmp_path)
    monkeypatch.setattr(os, "replace", real_replace)
    assert_same_outputs(model, load_model(tmp_path))


def test_flipped_bytes_fail_the_checksum(tmp_path: Path) -> None:
    """Probe: flipped bytes in model.safetensors loaded silently (the weights became NaN)."""
    save_model(tiny_model(), tmp_path)
    path = tmp_path / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF  # inside the last tensor's bytes
    path.write_bytes(bytes(data))
    with pytest.raises(
        FileFormatError, match=r"model\.safetensors: the tensors fail their checksum"
    ):
        load_model(tmp_path)


def test_lora_config_without_targets_names_the_file(tmp_path: Path) -> None:
    """Probe: a saved LoRA config without ``targets`` gave a bare KeyError."""
    save_model(lora_classifier(), tmp_path)
    _edit_config(tmp_path, lambda c: c["lora"].pop("targets"))
    with pytest.raises(
        FileFormatError, match=r"config\.json: the LoRA settings lack \['targets'\]"
    ):
        load_model(tmp_path)


def test_non_utf8_config_names_the_file(tmp_path: Path) -> None:
    """Probe: a non-UTF-8 config.json gave a bare UnicodeDecodeError."""
    save_model(tiny_model(), tmp_path)
    (tmp_path / "config.json").write_bytes(b'{"format": "\xff\xfe"}')
    with pytest.raises(FileFormatError, match=r"config\.json: the model config is not UTF-8"):
        load_model(tmp_path)


def test_stale_temporaries_of_dead_processes_are_removed(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".model.safetensors.{dead.pid}.0123abcd.tmp"
    save_model(tiny_model(), tmp_path)
    stale.write_bytes(b"x" * 1000)  # what a kill -9 in the middle of a save leaves
    save_model(tiny_model(), tmp_path)
    assert not stale.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]


def test_bad_directories(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_model(tmp_path)
    (tmp_path / "config.json").write_text('{"format": "something else"}')
    with pytest.raises(ValueError, match="not a gpt2lib model config"):
        load_model(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_model(tmp_path)
    save_model(tiny_model(), tmp_path / "m")
    (tmp_path / "m" / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        load_model(tmp_path / "m")
    save_model(tiny_model(), tmp_path / "n")
    _edit_config(tmp_path / "n", lambda c: c["gpt_config"].update(n_embd=32))
    with pytest.raises(ValueError, match="unknown field"):
        load_model(tmp_path / "n")


def test_module_is_light() -> None:
    assert saving_module.FORMAT == "gpt2lib-model-1"
