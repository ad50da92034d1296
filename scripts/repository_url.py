"""The repository URL lives in one place, ``_config.yml`` (``repository.url``).

The website's repository and issues buttons and its Colab launch links read it there. Each
chapter's Colab install cell must carry it too (Colab opens the notebook alone, without
``_config.yml``), so this script writes it into them::

    python scripts/repository_url.py           # check: exit 1 if a chapter names another URL
    python scripts/repository_url.py --write   # after changing _config.yml: update the chapters

tests/test_publishing.py runs the check and makes sure no other file names the URL.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
# the install cell's line, as it appears inside the notebook's JSON
INSTALL_LINE = re.compile(r'(REPO = \\")([^"\\]+)(\\")')


def configured_url(root: Path = ROOT) -> str:
    """``repository.url`` of ``_config.yml``."""
    config = yaml.safe_load((root / "_config.yml").read_text(encoding="utf-8"))
    url = (config.get("repository") or {}).get("url")
    if not isinstance(url, str) or not url.startswith("https://"):
        raise ValueError(f"{root / '_config.yml'}: repository.url must be an https:// URL")
    return url.rstrip("/")


def chapters(root: Path = ROOT) -> list[Path]:
    return sorted((root / "book").glob("*.ipynb"))


def sync(root: Path = ROOT, write: bool = False) -> list[Path]:
    """The chapters whose install cell names another URL (rewritten when ``write``)."""
    url, stale = configured_url(root), []
    for path in chapters(root):
        text = path.read_text(encoding="utf-8")
        found = INSTALL_LINE.findall(text)
        if len(found) != 1:
            raise ValueError(
                f'{path}: expected one install cell with REPO = "...", found {len(found)}'
            )
        if found[0][1] != url:
            stale.append(path)
            if write:
                new = INSTALL_LINE.sub(lambda m: m.group(1) + url + m.group(3), text)
                path.write_text(new, encoding="utf-8")
    return stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--write", action="store_true", help="update the chapters' install cells")
    args = parser.parse_args(argv)
    stale = sync(write=args.write)
    for path in stale:
        print(f"{'updated' if args.write else 'stale'}: {path.relative_to(ROOT)}")
    if stale and not args.write:
        print("run: python scripts/repository_url.py --write", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
