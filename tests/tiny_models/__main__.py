"""``python -m tests.tiny_models OUTDIR [ROLE ...]``: write the tiny models to OUTDIR."""

from __future__ import annotations

import argparse
from pathlib import Path

from tests.tiny_models import BUILDERS, build


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.tiny_models", description=__doc__)
    parser.add_argument("outdir", type=Path, help="folder to write one subfolder per role into")
    parser.add_argument("roles", nargs="*", metavar="ROLE", help=f"roles ({', '.join(BUILDERS)}); all by default")
    args = parser.parse_args()
    for role, path in build(args.outdir, args.roles or None).items():
        print(f"{role:15} {path}")


if __name__ == "__main__":
    main()
