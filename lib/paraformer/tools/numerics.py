"""The numerics record (`paraformer.training.numerics`): run the canary and compare it with numerics.json, or
record the running code in it (what that means for finished runs: docs/run-cache.md, "Stale runs").

    python -m paraformer.tools.numerics            # check: exit 1 where the code or its numbers are not recorded
    python -m paraformer.tools.numerics --update   # make numerics: record this code and its canary digest
"""

from __future__ import annotations

import sys

from ..core.config import OneLineArgumentParser
from ..training import canary, numerics


def main(argv: list[str] | None = None) -> int:
    parser = OneLineArgumentParser(prog="python -m paraformer.tools.numerics", description=__doc__.splitlines()[0])
    parser.add_argument("--update", action="store_true", help="record this code and its canary digest")
    args = parser.parse_args(argv)
    kind, code = numerics.machine_kind(), numerics.code_digest()
    before, expected = numerics.current_numerics(), numerics.expected_canary(kind)
    print(f"running the canary on {kind} ...", file=sys.stderr, flush=True)
    digests = canary.run_canary()
    overall = canary.overall(digests)
    print(f"code {code} ({'numbers ' + before if before else 'not recorded'}); canary {overall} (expected here: "
          f"{expected[0] if expected else 'nothing recorded on this kind for these numbers'})")
    runs = expected[1] if expected else {}  # per-run digests, where recorded for these numbers on this kind
    changed = sorted(name for name, digest in digests.items() if name in runs and runs[name] != digest)
    added = sorted(name for name in digests if runs and name not in runs)
    if expected and overall != expected[0]:
        print(f"numbers changed in: {', '.join(changed) or ('none' if added else 'the canary as a whole')}"
              + (f"; new canary runs: {', '.join(added)}" if added else ""))
    if args.update:
        known = numerics.record(digests, overall, kind)["known"]
        if any(other != code and label == known[code] for other, label in known.items()):
            print(f"recorded: this code computes numbers {known[code]}, as code recorded before did; every finished "
                  "run of those numbers stays current")
        else:
            print(f"recorded: this code computes numbers of its own ({known[code]}); the runs trained by other numbers "
                  "are stale (make reproduce RETRAIN=stale retrains them)")
        return 0
    if not before or expected and overall != expected[0]:
        print("not recorded: make numerics records this code", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
