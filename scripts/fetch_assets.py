"""Assemble the offline assets from their canonical URLs, each checked against scripts/assets.json.

A machine with internet but without ``../shared/assets`` (a CI runner, a fork) gets the same
folder the tests read::

    python scripts/fetch_assets.py --out build/assets
    export GPT2LIB_ASSETS=$PWD/build/assets      # gpt2lib.testing.offline reads <GPT2LIB_ASSETS>/mirror

Every file goes through :func:`gpt2lib.download.download` (atomic, resumable, so
``GPT2LIB_MIRROR`` applies too) and must match the sha256 and size in the table; for the UCI
zip, whose bytes differ between copies, the file inside it is what is checked. Exits non-zero,
naming the URL, if anything fails.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import urllib.parse
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gpt2lib.download import DownloadError, discard, download  # noqa: E402

TABLE = Path(__file__).with_name("assets.json")


def destination(out: Path, asset: dict) -> Path:
    """``out/mirror/<host>/<path>``, or ``out/<dest>`` when the table names one."""
    if "dest" in asset:
        return out / asset["dest"]
    parts = urllib.parse.urlsplit(asset["url"])
    return out.joinpath("mirror", parts.netloc, *[s for s in parts.path.split("/") if s])


def fetch_asset(out: Path, asset: dict) -> Path:
    """Download one asset into ``out`` and check it; raise ``ValueError`` naming what differs."""
    dest = destination(out, asset)
    if "member" not in asset:
        return download(asset["url"], dest, sha256=asset["sha256"], size=asset["size"])
    download(asset["url"], dest)
    with zipfile.ZipFile(dest) as zf:
        names = [n for n in zf.namelist() if n.rsplit("/", 1)[-1] == asset["member"]]
        data = zf.read(names[0]) if names else b""
    digest = hashlib.sha256(data).hexdigest()
    if digest != asset["sha256"] or len(data) != asset["size"]:
        discard(dest)  # the file and its download record
        raise ValueError(
            f"{asset['url']}: {asset['member']} inside has sha256 {digest} ({len(data)} bytes), "
            f"expected {asset['sha256']} ({asset['size']} bytes)"
        )
    return dest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="the folder to fill")
    parser.add_argument("--table", type=Path, default=TABLE, help="default: scripts/assets.json")
    args = parser.parse_args(argv)
    assets = json.loads(args.table.read_text(encoding="utf-8"))["assets"]
    failed = 0
    for asset in assets:
        try:
            path = fetch_asset(args.out, asset)
            print(f"ok      {path.relative_to(args.out)}")
        except (DownloadError, ValueError, zipfile.BadZipFile) as err:
            print(f"FAILED  {err}", file=sys.stderr)
            failed += 1
    print(f"{len(assets) - failed} of {len(assets)} assets in {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
