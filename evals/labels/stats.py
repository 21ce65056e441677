"""Counts of the label set: per corpus/variant/kind/label and per half (for the README and reports)."""

from __future__ import annotations

import collections
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def main() -> None:
    halves = {h: [json.loads(l) for l in (ROOT / f"tests/fixtures/labels/{h}.jsonl").read_text().splitlines()]
              for h in ("tune", "heldout")}
    rows = [r | {"half": h} for h, rs in halves.items() for r in rs]
    real = [r for r in rows if r["probe_kind"] == "real"]
    probes = [r for r in rows if r["probe_kind"] != "real"]
    print(f"{len(rows)} rows: {len(real)} real answers, {len(probes)} probes; "
          f"tune {len(halves['tune'])}, heldout {len(halves['heldout'])}")
    print(f"borderline notes: {sum(r['note'].startswith('borderline') for r in rows)}")
    for title, keyf, subset in (
        ("real: corpus x variant", lambda r: (r["corpus"], r["variant"]), real),
        ("real: corpus x kind", lambda r: (r["corpus"], r["kind"]), real),
        ("real: corpus x label", lambda r: (r["corpus"], r["label"]), real),
        ("probes: corpus x probe_kind", lambda r: (r["corpus"], r["probe_kind"]), probes),
        ("probes: probe_kind x label", lambda r: (r["probe_kind"], r["label"]), probes),
    ):
        print(f"\n{title}  (total / tune / heldout)")
        c = collections.Counter(keyf(r) for r in subset)
        ch = collections.Counter((keyf(r), r["half"]) for r in subset)
        for k in sorted(c):
            print(f"  {' / '.join(k):40s} {c[k]:4d} {ch[(k, 'tune')]:4d} {ch[(k, 'heldout')]:4d}")


if __name__ == "__main__":
    main()
