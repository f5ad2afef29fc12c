"""The numerics record (`paraformer.training.numerics`): run the canary and compare it with numerics.json, or
record the running code in it.

    python -m paraformer.tools.numerics            # check: exit 1 where the code or its numbers are not recorded
    python -m paraformer.tools.numerics --update   # make numerics: record this code and its canary digest

After an edit of the training code, `--update` says whether the edit changed a number: if not, every finished run
stays current; if so, the runs it names were trained by other numbers and are stale (`make reproduce
RETRAIN=stale` retrains them).
"""

from __future__ import annotations

import sys

import torch

from ..core.config import OneLineArgumentParser
from ..core.provenance import device_name
from ..training import canary, numerics


def main(argv: list[str] | None = None) -> int:
    parser = OneLineArgumentParser(prog="python -m paraformer.tools.numerics", description=__doc__.splitlines()[0])
    parser.add_argument("--update", action="store_true", help="record this code and its canary digest")
    args = parser.parse_args(argv)
    before = numerics.recorded()
    print("running the canary ...", file=sys.stderr, flush=True)
    digests = canary.run_canary()
    overall = canary.overall(digests)
    changed = sorted(name for name, digest in digests.items() if before["runs"].get(name) != digest)
    code = numerics.code_digest()
    print(f"code {code} (recorded: {before['code_digest'] or 'none'}); canary {overall} (recorded: "
          f"{before['canary'] or 'none'}{', measured on ' + before['measured_on'] if before['measured_on'] else ''})")
    if changed:
        print(f"numbers changed in: {', '.join(changed)}")
    if args.update:
        numerics.record(digests, overall, f"{device_name(torch.device('cpu'))}, torch {torch.__version__}")
        if overall == before["canary"]:
            print("recorded: this code computes the recorded numbers; every finished run stays current")
        else:
            print("recorded: the canary computes other numbers than it did for the code before (the training code or "
                  "the canary's own runs changed); the runs that code trained are stale (make reproduce "
                  "RETRAIN=stale retrains them)")
        return 0
    if code != before["code_digest"] or overall != before["canary"]:
        print("not recorded: make numerics records this code", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
