"""The offline assets, fetched from their canonical URLs and checked against their sha256.

The tests and the chapters' offline profile read a folder of public assets laid out as a
mirror, ``<assets>/mirror/<host>/<path>``, plus ``<assets>/reference/`` (OpenAI's 124M
metadata). A developer's checkout has it beside it, as ``../shared/assets``; a fresh clone on a
machine with internet fetches it on first use with :func:`fetch_assets`: every file goes through
:func:`gpt2lib.download.download` (atomic and resumable, so ``GPT2LIB_MIRROR`` applies) and must
match the size and sha256 in ``assets.json`` beside this module. For the UCI zip, whose bytes
differ between copies, the file inside it is what is checked.
"""

from __future__ import annotations

import hashlib
import json
import urllib.parse
import zipfile
from pathlib import Path
from typing import Any

from gpt2lib.download import discard, download
from gpt2lib.files import FileFormatError, atomic_write_text

TABLE = Path(__file__).with_name("assets.json")
COMPLETE = ".complete"  # written into the folder once every asset is in and checked


def assets_table(table: Path = TABLE) -> list[dict[str, Any]]:
    """The assets: ``url``, ``sha256``, ``size``, and ``member`` (a file checked inside a zip)
    or ``dest`` (a path under the folder other than the mirror's)."""
    return json.loads(table.read_text(encoding="utf-8"))["assets"]


def destination(out: Path, asset: dict[str, Any]) -> Path:
    """``out/mirror/<host>/<path>``, or ``out/<dest>`` when the table names one."""
    if "dest" in asset:
        return out / asset["dest"]
    parts = urllib.parse.urlsplit(asset["url"])
    return out.joinpath("mirror", parts.netloc, *[s for s in parts.path.split("/") if s])


def fetch_asset(out: Path, asset: dict[str, Any]) -> Path:
    """Download one asset into ``out`` and check it; raise naming the URL and what differs."""
    dest = destination(out, asset)
    if "member" not in asset:
        return download(asset["url"], dest, sha256=asset["sha256"], size=asset["size"])
    download(asset["url"], dest)
    try:
        with zipfile.ZipFile(dest) as zf:
            names = [n for n in zf.namelist() if n.rsplit("/", 1)[-1] == asset["member"]]
            data = zf.read(names[0]) if names else b""
    except zipfile.BadZipFile:
        data = b""
    digest = hashlib.sha256(data).hexdigest()
    if digest != asset["sha256"] or len(data) != asset["size"]:
        discard(dest)  # the file and its download record
        raise FileFormatError(
            dest,
            f"from {asset['url']}: {asset['member']} inside has sha256 {digest} ({len(data)} "
            f"bytes), expected {asset['sha256']} ({asset['size']} bytes)",
        )
    return dest


def fetch_assets(out: Path, table: Path = TABLE) -> Path:
    """Fill ``out`` with every asset of ``table`` (a complete folder is left alone); return it.

    Raises on the first asset that cannot be had or does not match; what was fetched stays, so
    a second call resumes.
    """
    out = Path(out)
    if (out / COMPLETE).is_file():
        return out
    for asset in assets_table(table):
        fetch_asset(out, asset)
    atomic_write_text(out / COMPLETE, "every asset of assets.json, sha256-checked\n")
    return out
