"""gpt2lib.tensor_bundle: OpenAI's checkpoints read without TensorFlow, checked against it."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from gpt2lib import tensor_bundle as tb
from gpt2lib.files import FileFormatError
from gpt2lib.weights import download_gpt2, load_openai_checkpoint, openai_shapes
from tools.offline import shared_assets

REPO = Path(__file__).resolve().parents[1]
SHARED = shared_assets()
REFERENCE = SHARED / "reference" / "openai-gpt2-124M" / "model.ckpt"
DATA = "model.ckpt.data-00000-of-00001"


def test_crc32c_known_value_and_fallback_agree() -> None:
    assert tb.crc32c(b"123456789") == 0xE3069283  # the standard check value of CRC-32C
    data = np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes()
    assert tb._crc32c_python(data) == tb.crc32c(data)


def test_reads_the_index_of_openais_real_124m_release() -> None:
    if not REFERENCE.with_suffix(".ckpt.index").is_file():
        pytest.skip(f"reference files not found at {REFERENCE.parent}")
    hparams = {"n_vocab": 50257, "n_ctx": 1024, "n_embd": 768, "n_head": 12, "n_layer": 12}
    expected = {name: list(shape) for name, shape in openai_shapes(hparams).items()}
    assert dict(tb.list_variables(REFERENCE)) == expected  # all 148, shapes included
    entry = tb.read_index(REFERENCE)["model/wte"]
    assert entry.dtype == np.float32 and entry.size == 50257 * 768 * 4


@pytest.mark.parametrize("name", ["stand-in-tiny", "mini-shakespeare"])
def test_same_tensors_as_tensorflow(name: str, tmp_path: Path) -> None:
    """The reference: tf.train.load_checkpoint, tensor for tensor, on checkpoints TF wrote
    (the mirror's stand-in, and the mini model written here, as chapter 4 writes it)."""
    pytest.importorskip("tensorflow")
    if name == "mini-shakespeare":
        from gpt2lib.mini import load_mini
        from tools.tf_checkpoint import write_openai_checkpoint

        ckpt = write_openai_checkpoint(load_mini(), tmp_path / name)
    else:
        ckpt = download_gpt2(name, tmp_path)
    hparams, ours = load_openai_checkpoint(ckpt)
    tf_hparams, reference = load_openai_checkpoint(ckpt, reader="tensorflow")
    assert hparams == tf_hparams and list(ours) == list(reference)
    for key, value in reference.items():
        assert ours[key].dtype == np.float32 and np.array_equal(ours[key], value), key


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    ckpt = download_gpt2("stand-in-tiny", tmp_path / "models")
    local = tmp_path / "local"
    shutil.copytree(ckpt, local)
    return local


def _flip(path: Path, at: int) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))


def test_truncated_data_file_names_file_and_tensor(copy: Path) -> None:
    data = copy / DATA
    data.write_bytes(data.read_bytes()[:100_000])
    with pytest.raises(FileFormatError, match=rf"{DATA}: truncated: tensor '[^']+' needs bytes"):
        tb.load_tensors(copy / "model.ckpt")


def test_crc_mismatch_names_file_and_tensor(copy: Path) -> None:
    entry = tb.read_index(copy / "model.ckpt")["model/wpe"]
    _flip(copy / DATA, entry.offset + 10)
    with pytest.raises(FileFormatError, match=rf"{DATA}: tensor 'model/wpe' fails its crc32c"):
        load_openai_checkpoint(copy)


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda p: _flip(p, 10), "crc32c mismatch in the block"),
        (lambda p: p.write_bytes(p.read_bytes()[:-1]), "wrong magic number"),
        (lambda p: p.write_bytes(b"not an index at all, but long enough to have a footer" * 2),
         "wrong magic number"),
    ],
    ids=["flipped-byte", "truncated", "garbage"],
)  # fmt: skip
def test_bad_index_names_the_file(copy: Path, damage, message: str) -> None:
    damage(copy / "model.ckpt.index")
    with pytest.raises(FileFormatError, match=rf"model\.ckpt\.index: not a readable .*{message}"):
        load_openai_checkpoint(copy)


def test_reading_needs_no_tensorflow(copy: Path) -> None:
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['tensorflow'] = None  # importing it now fails\n"
        "from gpt2lib.weights import model_from_openai_checkpoint\n"
        f"model = model_from_openai_checkpoint({str(copy)!r})\n"
        "assert sum(p.numel() for p in model.parameters()) == 3_324_736\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
