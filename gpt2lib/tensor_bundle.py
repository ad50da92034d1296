"""TensorFlow's checkpoint format (the "tensor bundle", V2), read with numpy: no TensorFlow.

OpenAI released GPT-2 as TensorFlow checkpoints: ``model.ckpt.index`` says where each tensor is,
``model.ckpt.data-00000-of-00001`` holds the tensors' raw bytes back to back. The index is a
table in LevelDB's format (``tensorflow/core/lib/io/table``, after LevelDB's
``doc/table_format.md``):

- a 48-byte *footer* at the end: two block handles (varint offset and size) of the
  meta-index and the index block, padding, and the magic number ``0xdb4775248b80fb57``;
- *blocks* of key/value entries, each entry ``varint shared, varint non_shared, varint
  value_length, key suffix, value`` (keys share prefixes with the entry before), then the
  restart offsets; each block is followed by a compression byte (0: none, the only kind
  TensorFlow's bundle writer uses) and a masked crc32c of block and byte;
- the *index block* maps the last key of each data block to that block's handle.

The keys are the variable names, sorted; the empty key holds a ``BundleHeaderProto`` and
every other value is a ``BundleEntryProto`` (``tensorflow/core/protobuf/tensor_bundle.proto``):
dtype (1), shape (2), shard (3), offset (4), size (5), masked crc32c of the bytes (6). The
values are decoded here by hand (protobuf's wire format: varints and length-delimited fields),
so reading needs neither TensorFlow nor protobuf. Every block and every tensor is checked
against its crc32c; the ``crc32c`` package makes that fast, and without it a slower pure-Python
crc32c is used.

TensorFlow remains the reference: the tests compare this reader with
``tf.train.load_checkpoint`` tensor for tensor.
"""

from __future__ import annotations

import dataclasses
import os
import struct
from pathlib import Path

import numpy as np

from .files import FileFormatError

__all__ = ["BundleEntry", "list_variables", "load_tensors", "read_index"]

MAGIC = 0xDB4775248B80FB57
FOOTER_SIZE = 48
# TensorFlow's DataType enum (types.proto) -> numpy, little-endian
DTYPES = {
    1: np.dtype("<f4"), 2: np.dtype("<f8"), 3: np.dtype("<i4"), 4: np.dtype("u1"),
    5: np.dtype("<i2"), 6: np.dtype("i1"), 9: np.dtype("<i8"), 10: np.dtype("?"),
    17: np.dtype("<u2"), 19: np.dtype("<f2"), 22: np.dtype("<u4"), 23: np.dtype("<u8"),
}  # fmt: skip


@dataclasses.dataclass(frozen=True)
class BundleEntry:
    """Where one tensor is: its dtype, shape, data shard, byte offset and size, crc32c."""

    name: str
    dtype: np.dtype
    shape: tuple[int, ...]
    shard: int
    offset: int
    size: int
    crc32c: int  # masked, as stored


# --- crc32c (Castagnoli), masked as LevelDB masks it ------------------------------------------


def _crc32c_table() -> list[int]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _crc32c_table()


def _crc32c_python(data: bytes | memoryview) -> int:
    crc = 0xFFFFFFFF
    table = _TABLE
    for byte in bytes(data):
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


try:  # the crc32c package: hardware-accelerated where the CPU has the instruction
    from crc32c import crc32c as _crc32c_fast
except ImportError:  # pragma: no cover - exercised where the package is missing
    _crc32c_fast = None


def crc32c(data: bytes | memoryview) -> int:
    """The CRC-32C (Castagnoli) of ``data``."""
    return _crc32c_fast(data) if _crc32c_fast is not None else _crc32c_python(data)


def mask(crc: int) -> int:
    """LevelDB's masking of a stored crc: rotate right by 15 bits, add a constant."""
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


# --- varints and protobuf fields ----------------------------------------------------------------


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    """Decode a varint at ``pos``; return ``(value, next position)``."""
    result = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise ValueError("truncated or overlong varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(buf: bytes) -> list[tuple[int, int | bytes]]:
    """The ``(field number, value)`` pairs of a protobuf message (varint, fixed, bytes)."""
    fields, pos = [], 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = int.from_bytes(buf[pos : pos + 8], "little"), pos + 8
        elif wire == 5:
            value, pos = int.from_bytes(buf[pos : pos + 4], "little"), pos + 4
        elif wire == 2:
            length, pos = _varint(buf, pos)
            value, pos = buf[pos : pos + length], pos + length
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        if pos > len(buf):
            raise ValueError("truncated protobuf message")
        fields.append((number, value))
    return fields


def _entry(name: str, value: bytes) -> BundleEntry:
    fields = _fields(value)
    get = {n: v for n, v in fields}
    shape = []
    for number, dim in _fields(get.get(2, b"")):  # TensorShapeProto: repeated Dim dim = 2
        if number == 2:
            shape.append(int(dict(_fields(dim)).get(1, 0)))
    if any(n == 7 for n, _ in fields):
        raise ValueError("sliced (partitioned) variables are not supported")
    code = int(get.get(1, 0))
    if code not in DTYPES:
        raise ValueError(f"unsupported TensorFlow dtype {code}")
    return BundleEntry(
        name, DTYPES[code], tuple(shape), int(get.get(3, 0)), int(get.get(4, 0)),
        int(get.get(5, 0)), int(get.get(6, 0)),
    )  # fmt: skip


# --- the table --------------------------------------------------------------------------------


def _block(data: bytes, offset: int, size: int) -> bytes:
    """The contents of the block at ``offset``, its trailer checked (type 0, crc32c)."""
    end = offset + size
    if end + 5 > len(data):
        raise ValueError(f"block at byte {offset} runs past the end of the file")
    kind = data[end]
    if kind != 0:
        raise ValueError(f"block at byte {offset} is compressed (type {kind}); not supported")
    stored = int.from_bytes(data[end + 1 : end + 5], "little")
    if mask(crc32c(data[offset : end + 1])) != stored:
        raise ValueError(f"crc32c mismatch in the block at byte {offset}")
    return data[offset:end]


def _entries(block: bytes) -> list[tuple[bytes, bytes]]:
    """The key/value entries of a block, keys rebuilt from their shared prefixes."""
    if len(block) < 4:
        raise ValueError("block too short")
    restarts = int.from_bytes(block[-4:], "little")
    limit = len(block) - 4 - 4 * restarts
    if limit < 0:
        raise ValueError("bad restart count")
    entries, pos, key = [], 0, b""
    while pos < limit:
        shared, pos = _varint(block, pos)
        non_shared, pos = _varint(block, pos)
        length, pos = _varint(block, pos)
        if shared > len(key) or pos + non_shared + length > limit:
            raise ValueError("malformed block entry")
        key = key[:shared] + block[pos : pos + non_shared]
        pos += non_shared
        entries.append((key, block[pos : pos + length]))
        pos += length
    return entries


def _handle(value: bytes) -> tuple[int, int]:
    offset, pos = _varint(value, 0)
    size, _ = _varint(value, pos)
    return offset, size


def read_index(prefix: str | os.PathLike) -> dict[str, BundleEntry]:
    """Every tensor's :class:`BundleEntry` from ``<prefix>.index``, in name order.

    Raises :class:`~gpt2lib.files.FileFormatError` naming the index file when it is not a
    tensor-bundle index, or a block fails its crc32c.
    """
    path = Path(f"{prefix}.index")
    data = path.read_bytes()
    try:
        if len(data) < FOOTER_SIZE or struct.unpack("<Q", data[-8:])[0] != MAGIC:
            raise ValueError("no table footer (wrong magic number): not a TensorFlow index")
        footer = data[-FOOTER_SIZE:]
        _, pos = _varint(footer, _varint(footer, 0)[1])  # skip the meta-index handle
        index_offset, pos = _varint(footer, pos)
        index_size, _ = _varint(footer, pos)
        entries: dict[str, BundleEntry] = {}
        for _, handle in _entries(_block(data, index_offset, index_size)):
            for key, value in _entries(_block(data, *_handle(handle))):
                if key:  # the empty key holds the BundleHeaderProto
                    name = key.decode("utf-8")
                    entries[name] = _entry(name, value)
    except (ValueError, UnicodeDecodeError) as err:
        raise FileFormatError(path, f"not a readable checkpoint index ({err})") from None
    return entries


def list_variables(prefix: str | os.PathLike) -> list[tuple[str, list[int]]]:
    """``[(name, shape)]`` as ``tf.train.list_variables`` lists them (reads the index only)."""
    return [(name, list(e.shape)) for name, e in read_index(prefix).items()]


def _data_file(prefix: str | os.PathLike, shard: int, shards: int) -> Path:
    return Path(f"{prefix}.data-{shard:05d}-of-{shards:05d}")


def load_tensors(
    prefix: str | os.PathLike,
    names: list[str] | None = None,
    index: dict[str, BundleEntry] | None = None,
) -> dict[str, np.ndarray]:
    """The tensors of the checkpoint at ``prefix`` (all, or ``names``) as numpy arrays.

    Every tensor is checked against its crc32c; a data file too short for the index, or a
    tensor whose bytes fail their checksum, raises :class:`~gpt2lib.files.FileFormatError`
    naming the data file and the tensor.
    """
    index = index if index is not None else read_index(prefix)  # pass it to read it once
    missing = sorted(set(names or []) - set(index))
    if missing:
        raise KeyError(f"{prefix}.index has no tensor(s) {missing}")
    shards = 1 + max((e.shard for e in index.values()), default=0)
    maps: dict[int, np.memmap] = {}
    out = {}
    for name in names if names is not None else list(index):
        entry = index[name]
        path = _data_file(prefix, entry.shard, shards)
        if entry.shard not in maps:
            if not path.is_file():
                raise FileNotFoundError(f"{path} is missing (named by {prefix}.index)")
            maps[entry.shard] = np.memmap(path, dtype=np.uint8, mode="r")
        buffer = maps[entry.shard]
        if entry.offset + entry.size > buffer.size:
            raise FileFormatError(
                path, f"truncated: tensor {name!r} needs bytes {entry.offset:,} to "
                f"{entry.offset + entry.size:,}, the file has {buffer.size:,}"
            )  # fmt: skip
        raw = buffer[entry.offset : entry.offset + entry.size]
        if mask(crc32c(memoryview(raw))) != entry.crc32c:
            raise FileFormatError(path, f"tensor {name!r} fails its crc32c check (corrupt)")
        expected = int(np.prod(entry.shape, dtype=np.int64)) * entry.dtype.itemsize
        if expected != entry.size:
            raise FileFormatError(
                path, f"tensor {name!r}: {entry.size} bytes for shape {entry.shape}"
            )
        out[name] = np.frombuffer(raw, dtype=entry.dtype).reshape(entry.shape).copy()
    return out
