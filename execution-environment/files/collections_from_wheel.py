"""Unpack collections from the `ansible` wheel into DEST/ansible_collections/NAMESPACE/NAME.

Usage: collections_from_wheel.py WHEEL DEST NAMESPACE.NAME...

The galaxy stage of the execution environment's build then installs them with ansible-galaxy
from those folders (type: dir), so the collections are the ones the ansible release that CI
runs carries, and Galaxy is never asked. Only the named collections are unpacked.
"""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path


def members(names: list[str], wanted: list[str]) -> list[str]:
    """The wheel's members that belong to the wanted collections; SystemExit when one is absent."""
    prefixes = {name: "ansible_collections/{}/{}/".format(*name.split(".", 1)) for name in wanted}
    missing = [name for name, prefix in prefixes.items() if f"{prefix}MANIFEST.json" not in names]
    if missing:
        raise SystemExit(f"collections_from_wheel: not in the wheel: {', '.join(missing)}")
    return [name for name in names if name.startswith(tuple(prefixes.values()))]


def main(argv: list[str]) -> int:
    if len(argv) < 3 or any(name.count(".") != 1 for name in argv[2:]):
        raise SystemExit(__doc__)
    wheel, dest, wanted = Path(argv[0]), Path(argv[1]), argv[2:]
    with zipfile.ZipFile(wheel) as archive:
        chosen = members(archive.namelist(), wanted)
        archive.extractall(dest, members=chosen)
    print(f"collections_from_wheel: {len(chosen)} files of {', '.join(wanted)} from {wheel.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
