"""Assemble the offline assets from their canonical URLs, each checked against the sha256 table.

A machine with internet but without ``../shared/assets`` gets the same folder the tests read.
The test suite does this itself on first use (:mod:`tools.offline`); this script does
it on its own, and reports every asset::

    python scripts/fetch_assets.py --out build/assets
    export GPT2LIB_ASSETS=$PWD/build/assets   # tools.offline reads <GPT2LIB_ASSETS>/mirror

The table is ``tools/assets.json``; the fetching is
:func:`tools.assets.fetch_asset` (through :func:`gpt2lib.download.download`, so
``GPT2LIB_MIRROR`` applies too). Exits non-zero, naming the URL, if anything fails.
"""

from __future__ import annotations

import argparse
import sys
import zipfile
from pathlib import Path

from gpt2lib.download import DownloadError
from gpt2lib.files import FileFormatError

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout: tools/
from tools.assets import TABLE, assets_table, fetch_asset


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="the folder to fill")
    parser.add_argument("--table", type=Path, default=TABLE, help="default: " + str(TABLE.name))
    args = parser.parse_args(argv)
    assets = assets_table(args.table)
    failed = 0
    for asset in assets:
        try:
            path = fetch_asset(args.out, asset)
            print(f"ok      {path.relative_to(args.out)}")
        except (DownloadError, FileFormatError, ValueError, zipfile.BadZipFile) as err:
            print(f"FAILED  {err}", file=sys.stderr)
            failed += 1
    print(f"{len(assets) - failed} of {len(assets)} assets in {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
