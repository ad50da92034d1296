"""A local mirror of the book's downloads, with stand-in GPT-2 checkpoints, served on 127.0.0.1.

A mirror is a directory laid out ``<host>/<path>``: it holds at ``HOST/PATH`` the bytes that
``https://HOST/PATH`` serves, and ``GPT2LIB_MIRROR`` points :mod:`gpt2lib.download` at it
(``file://`` or ``http://``). :func:`build_mirror` hard-links (or copies) in the files of a source mirror (e.g.
the project's ``shared/assets/mirror``) and writes model checkpoints in OpenAI's exact format
under ``openaipublic.blob.core.windows.net/gpt-2/models/<name>/``, so that
``download_gpt2(name)`` and ``model_from_openai_checkpoint`` run on them exactly as on GPT-2.

The models are never GPT-2: each lives under its own name, built by a factory registered in
:data:`MODELS` (``register_model``). ``stand-in-*`` models are seeded random GPT-2-shaped
networks at initialisation, for tests. Command line::

    python -m tools.mirror build OUT [--source DIR] [--models stand-in-tiny,...]
    python -m tools.mirror serve OUT [--port 0]     # prints the base URL, serves until ^C

:func:`serve` answers single-range ``Range: bytes=...`` requests with ``206 Partial Content``
(``http.server.SimpleHTTPRequestHandler`` ignores Range), so resumable downloads can be tested.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import hashlib
import http.server
import json
import os
import re
import shutil
import sys
import threading
import urllib.parse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from gpt2lib.config import GPT2_SIZES, GPTConfig
from gpt2lib.files import atomic_write_text, file_lock, sha256_file
from gpt2lib.model import GPTModel
from gpt2lib.weights import hparams_from_config, openai_params_from_gpt

from .tf_checkpoint import write_openai_checkpoint

MODELS_PATH = "openaipublic.blob.core.windows.net/gpt-2/models"
ENCODINGS_PATH = "openaipublic.blob.core.windows.net/gpt-2/encodings/main"


@dataclasses.dataclass(frozen=True)
class MirrorModel:
    """A model the mirror can serve: ``factory()`` returns it; ``description`` says what it is."""

    factory: Callable[[], GPTModel]
    description: str

    def build(self) -> GPTModel:
        return self.factory()


def random_gpt2(cfg: GPTConfig, seed: int) -> GPTModel:
    """A GPT-2-shaped model at its seeded random initialisation (the global RNG is untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return GPTModel(cfg).eval()


def _stand_in(cfg: GPTConfig, seed: int, what: str) -> MirrorModel:
    return MirrorModel(
        functools.partial(random_gpt2, cfg, seed),
        f"{what}: seeded random weights (seed {seed}), GPT-2's shape and vocabulary, untrained; "
        "a stand-in for tests, not GPT-2",
    )


MODELS: dict[str, MirrorModel] = {
    "stand-in-tiny": _stand_in(
        GPTConfig(context_length=128, emb_dim=64, n_heads=2, n_layers=2, tie_embeddings=True),
        seed=123,
        what="tiny stand-in (context 128, 64-dim, 2 layers, 2 heads)",
    ),
    "stand-in-124M": _stand_in(
        GPTConfig.gpt2("124M", tie_embeddings=True), seed=123, what="stand-in with 124M's shape"
    ),
}
# the project's own mini GPT-2 is not among them: it ships in the package and loads from there
# (gpt2lib.weights.load_pretrained), never from under OpenAI's host
DEFAULT_MODELS: tuple[str, ...] = ("stand-in-tiny",)


def register_model(name: str, factory: Callable[[], GPTModel], description: str) -> None:
    """Make ``name`` buildable: ``factory()`` returns a GPT-2-shaped model.

    ``description`` says plainly what the model is; it goes into the mirror's ``stand-ins.json``.
    """
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise ValueError(f"invalid model name {name!r}: use letters, digits, '.', '_', '-'")
    if name in GPT2_SIZES:
        raise ValueError(f"{name!r} is one of OpenAI's sizes; give the model its own name")
    MODELS[name] = MirrorModel(factory, description)


def _link_tree(source: Path, out: Path) -> None:
    """Give ``out`` a regular file for each of ``source``'s files: a hard link where the file
    system allows one, else a copy. (No symlinks: the server serves only files inside its root.)"""
    for path in sorted(source.rglob("*")):
        if path.is_dir():
            continue
        dest = out / path.relative_to(source)
        if dest.is_file() and not dest.is_symlink() and os.path.samefile(dest, path):
            continue  # already linked
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
        tmp.unlink(missing_ok=True)
        try:
            os.link(path, tmp)
        except OSError:  # another file system, or links not allowed
            shutil.copyfile(path, tmp)
        os.replace(tmp, dest)


def _fingerprint(model: GPTModel, description: str) -> str:
    """sha256 over the description, the hparams and every tensor as OpenAI's format stores it."""
    digest = hashlib.sha256(json.dumps([description, hparams_from_config(model.cfg)]).encode())
    for name, value in sorted(openai_params_from_gpt(model).items()):
        digest.update(name.encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def _is_current(entry: dict[str, Any] | None, ckpt: Path, fingerprint: str) -> bool:
    if not entry or entry.get("fingerprint") != fingerprint or not ckpt.is_dir():
        return False
    files = entry.get("files", {})
    on_disk = sorted(p.name for p in ckpt.iterdir())
    return on_disk == sorted(files) and all(sha256_file(ckpt / f) == h for f, h in files.items())


def _source_files(out: Path, source: str | os.PathLike | None) -> bool | Path:
    """Link ``source``'s files into ``out``; return where the BPE files come from."""
    if source is None:
        return True  # through the download layer
    source = Path(source)
    if not source.is_dir():
        raise FileNotFoundError(f"source mirror {source} is not a directory")
    _link_tree(source, out)
    encodings = source / ENCODINGS_PATH
    return encodings if (encodings / "encoder.json").is_file() else True


def _write_models(
    out: Path, models: dict[str, MirrorModel], encoder_files: bool | Path
) -> dict[str, GPTModel]:
    """Write each model that changed under ``MODELS_PATH/<name>/``; record it in
    ``stand-ins.json``. Returns the models built."""
    manifest_path = out / "stand-ins.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    built = {}
    for name, entry in models.items():
        model = built[name] = entry.build()
        ckpt = out / MODELS_PATH / name
        fingerprint = _fingerprint(model, entry.description)
        if not _is_current(manifest.get(name), ckpt, fingerprint):
            write_openai_checkpoint(
                model, ckpt, encoder_files=encoder_files, overwrite=True,
                description=entry.description,
            )  # fmt: skip
        manifest[name] = {
            "description": entry.description,
            "hparams": hparams_from_config(model.cfg),
            "parameters": sum(p.numel() for p in model.parameters()),
            "fingerprint": fingerprint,
            "files": {f.name: sha256_file(f) for f in sorted(ckpt.iterdir())},
        }
    atomic_write_text(manifest_path, json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return built


def build_mirror(
    out: str | os.PathLike,
    source: str | os.PathLike | None = None,
    models: Sequence[str] = DEFAULT_MODELS,
) -> Path:
    """Assemble a mirror in ``out``: ``source``'s files (hard-linked, or copied) plus ``models``.

    Each model is written with :func:`tools.tf_checkpoint.write_openai_checkpoint` under
    ``MODELS_PATH/<name>/``; its BPE files come from ``source`` when it has them, else through
    the download layer. ``out/stand-ins.json`` records every model's description,
    configuration, parameter count, a fingerprint of its weights and its files' sha256. A model
    whose fingerprint and files are unchanged is not written again (nor TensorFlow imported).
    Returns ``out``.
    """
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        raise ValueError(f"unknown model(s) {unknown}; registered: {sorted(MODELS)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with file_lock(out / ".build.lock"):  # several test sessions may build at once
        encoder_files = _source_files(out, source)
        _write_models(out, {name: MODELS[name] for name in models}, encoder_files)
    return out


# --- the rehearsal of the full profile ----------------------------------------------------------

REHEARSAL_SIZES = ("124M", "355M")
HF_NAMES = {"124M": "gpt2", "355M": "gpt2-medium"}


def rehearsal_model(size: str) -> MirrorModel:
    """A seeded random stand-in with GPT-2 ``size``'s shape, for the rehearsal only."""
    return MirrorModel(
        functools.partial(random_gpt2, GPTConfig.gpt2(size, tie_embeddings=True), 123),
        f"rehearsal: random weights (seed 123) in GPT-2 {size}'s shape, not OpenAI's GPT-2",
    )


def build_rehearsal_mirror(
    out: str | os.PathLike,
    source: str | os.PathLike | None = None,
    sizes: Sequence[str] = REHEARSAL_SIZES,
) -> Path:
    """A mirror for ``scripts/rehearse.py``: ``source``'s files, plus seeded random stand-ins
    served *at OpenAI's paths* for ``sizes`` and at the Hugging Face hub's paths of the same
    models, each with a ``gpt2lib.json`` that says "rehearsal: random weights".

    This is the only place a stand-in sits under OpenAI's names: the full profile's code path
    runs on it at the real model sizes, and nothing it computes is GPT-2's.
    """
    from gpt2lib.huggingface import export_hf

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with file_lock(out / ".build.lock"):
        encoder_files = _source_files(out, source)
        built = _write_models(out, {s: rehearsal_model(s) for s in sizes}, encoder_files)
        for size, model in built.items():
            hub = out / "huggingface.co" / "openai-community" / HF_NAMES[size] / "resolve" / "main"
            if not (hub / "model.safetensors").is_file():
                export_hf(model, hub, overwrite=True)
    return out


# --- serving ------------------------------------------------------------------------------------

_RANGE = re.compile(r"bytes=(\d*)-(\d*)")
_MAX_DIGITS = 18  # a byte offset longer than this is nonsense (and int() of 4,300 digits raises)


class RangeRequestHandler(http.server.SimpleHTTPRequestHandler):
    """``SimpleHTTPRequestHandler`` for a mirror: regular files inside the root only, single byte
    ranges (RFC 9110 section 14) with ``If-Range``, an ``ETag``, quiet logs.

    Refused with 404: directories (no listings), hidden names (the ``.build.lock``, temporaries),
    symlinks and anything that resolves outside the root. Malformed requests get 400 (a NUL in
    the path) or 416 (an absurd range). Idle connections are closed after :attr:`timeout`.
    """

    timeout = 30.0  # seconds a connection may sit idle (StreamRequestHandler applies it)
    _remaining: int | None = None

    def _file(self) -> str | None:
        """The file the request names, or None after an error response was sent."""
        raw = urllib.parse.unquote(self.path.split("?", 1)[0].split("#", 1)[0])
        if "\x00" in raw:
            self.send_error(400, "NUL in the path")
            return None
        parts = [p for p in raw.split("/") if p]
        root = os.path.realpath(self.directory)
        path = os.path.join(root, *parts)
        real = os.path.realpath(path)
        hidden = any(p.startswith(".") for p in parts)
        inside = real == path and real.startswith(root + os.sep)  # no symlink on the way
        if hidden or not inside or not os.path.isfile(real):
            self.send_error(404, "File not found")
            return None
        return real

    def _etag(self, path: str) -> str:
        st = os.stat(path)
        return f'"{st.st_size:x}-{st.st_mtime_ns:x}"'

    def send_head(self) -> Any:
        self._remaining = None
        path = self._file()
        if path is None:
            return None
        size, etag = os.path.getsize(path), self._etag(path)
        header = self.headers.get("Range")
        if_range = self.headers.get("If-Range")
        if (
            header is not None
            and if_range is not None
            and if_range.strip() not in (etag, self.date_time_string(int(os.stat(path).st_mtime)))
        ):
            header = None  # the client holds another version: send all of the current one
        match = _RANGE.fullmatch(header.strip()) if header is not None else None
        if header is not None and match is None and header.strip().startswith("bytes="):
            if any(len(d) > _MAX_DIGITS for d in re.findall(r"\d+", header)):
                return self._unsatisfiable(size)
        if not match or match.groups() == ("", ""):
            return self._whole(path, size, etag)  # no range, several, or another unit
        first, last = match.groups()
        if len(first) > _MAX_DIGITS or len(last) > _MAX_DIGITS:
            return self._unsatisfiable(size)
        if first and last and int(last) < int(first):
            return self._whole(path, size, etag)  # an invalid range is ignored
        if first:
            start, end = int(first), min(int(last), size - 1) if last else size - 1
        else:  # "bytes=-N": the last N bytes
            start, end = max(size - int(last), 0), size - 1
        if start >= size or end < start:
            return self._unsatisfiable(size)
        f = open(path, "rb")  # noqa: SIM115 (closed by the caller, as in the base class)
        f.seek(start)
        self._remaining = end - start + 1
        self.send_response(206)
        self.send_header("Content-Type", self.guess_type(path))
        self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Content-Length", str(self._remaining))
        self.send_header("ETag", etag)
        self.end_headers()
        return f

    def _whole(self, path: str, size: int, etag: str) -> Any:
        f = open(path, "rb")  # noqa: SIM115 (closed by the caller)
        self.send_response(200)
        self.send_header("Content-Type", self.guess_type(path))
        self.send_header("Content-Length", str(size))
        self.send_header("Last-Modified", self.date_time_string(int(os.stat(path).st_mtime)))
        self.send_header("ETag", etag)
        self.end_headers()
        return f

    def _unsatisfiable(self, size: int) -> None:
        self.send_response(416)
        self.send_header("Content-Range", f"bytes */{size}")
        self.send_header("Content-Length", "0")
        self.end_headers()
        return None

    def list_directory(self, path: Any) -> None:  # never reached: _file refuses directories
        self.send_error(404, "File not found")
        return None

    def end_headers(self) -> None:
        self.send_header("Accept-Ranges", "bytes")
        super().end_headers()

    def copyfile(self, source: Any, outputfile: Any) -> None:
        if self._remaining is None:
            return super().copyfile(source, outputfile)
        while self._remaining > 0:
            block = source.read(min(self._remaining, 1 << 16))
            if not block:
                break
            outputfile.write(block)
            self._remaining -= len(block)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (base-class name)
        pass


def serve(
    directory: str | os.PathLike, port: int = 0, timeout: float = 30.0
) -> tuple[http.server.HTTPServer, str]:
    """Serve ``directory`` on 127.0.0.1 from a daemon thread; return ``(server, base_url)``.

    ``port=0`` picks a free port; ``timeout``: seconds before an idle connection is closed.
    Stop it with ``server.shutdown(); server.server_close()``.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"cannot serve {directory}: not a directory")
    handler_class = type("MirrorHandler", (RangeRequestHandler,), {"timeout": timeout})
    handler = functools.partial(handler_class, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    server.daemon_threads = True
    threading.Thread(
        target=server.serve_forever, args=(0.1,), daemon=True, name="gpt2lib-mirror"
    ).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tools.mirror", description=__doc__.split("\n")[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build", help="assemble a mirror directory")
    build.add_argument("out", type=Path)
    build.add_argument("--source", type=Path, help="a mirror whose files to include")
    build.add_argument("--models", default=",".join(DEFAULT_MODELS), help="comma-separated names")
    build.add_argument(
        "--rehearsal", action="store_true",
        help="serve random stand-ins at OpenAI's 124M/355M paths (scripts/rehearse.py)",
    )  # fmt: skip
    run = commands.add_parser("serve", help="serve a mirror on 127.0.0.1")
    run.add_argument("out", type=Path)
    run.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    if args.command == "build":
        models = [m for m in args.models.split(",") if m]
        try:
            if args.rehearsal:
                build_rehearsal_mirror(args.out, args.source)
            else:
                build_mirror(args.out, args.source, models)
        except (ValueError, FileNotFoundError) as e:
            parser.error(str(e))
        print(f"built {args.out} with {', '.join(models) or 'no models'}")
    else:
        server, url = serve(args.out, args.port)
        print(url, flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            server.shutdown()
            server.server_close()


if __name__ == "__main__":
    main(sys.argv[1:])
