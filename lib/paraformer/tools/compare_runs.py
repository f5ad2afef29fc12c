"""Whether two results folders hold the same runs with the same numbers, bit for bit: every record of the first
matched by name and key in the second, its per-epoch history (times aside), its final accuracies, its per-image
test predictions and, where both folders have them (they are not committed), its final weights tensor by tensor.
Exit code 0 when every run of both folders is in the other and identical, else 1, with one line per difference.

    python -m paraformer.tools.compare_runs results/ /elsewhere/results/   # e.g. a rerun against the committed runs
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from ..core.config import OneLineArgumentParser
from ..core.runcache import read_record

NUMBERS = ("final_test_acc", "final_prefix_test_acc", "final_val_acc", "num_params", "test_predictions",
           "test_labels", "config")


def _history(record) -> list[dict]:
    return [{k: v for k, v in entry.items() if "seconds" not in k} for entry in record.history]


def compare(first: Path, second: Path) -> tuple[int, int, list[str]]:
    """(runs compared, of them with weights in both folders, differences in words) of the records under
    `first`/runs and `second`/runs."""
    records = [{path.name: read_record(path) for path in sorted((Path(folder) / "runs").glob("*.json"))}
               for folder in (first, second)]
    differences = [f"{name}: only in {folder}" for folder, mine, theirs in ((first, *records), (second, *records[::-1]))
                   for name in sorted(set(mine) - set(theirs))]
    weighed = 0
    for name in sorted(set(records[0]) & set(records[1])):
        a, b = records[0][name], records[1][name]
        if _history(a) != _history(b):
            epoch = next(i for i, (x, y) in enumerate(zip(_history(a), _history(b)), start=1) if x != y) \
                if len(a.history) == len(b.history) else "count"
            differences.append(f"{name}: per-epoch history differs (epoch {epoch})")
        differences += [f"{name}: {field} differs" for field in NUMBERS if getattr(a, field) != getattr(b, field)]
        weights = [Path(folder) / "models" / Path(name).with_suffix(".pt") for folder in (first, second)]
        if all(path.is_file() for path in weights):
            weighed += 1
            w, v = (torch.load(path, map_location="cpu", weights_only=True) for path in weights)
            if w.keys() != v.keys() or not all(torch.equal(w[tensor], v[tensor]) for tensor in w):
                differences.append(f"{name}: final weights differ")
    return len(set(records[0]) & set(records[1])), weighed, differences


def main(argv: list[str] | None = None) -> int:
    parser = OneLineArgumentParser(prog="python -m paraformer.tools.compare_runs", description=__doc__.splitlines()[0])
    parser.add_argument("first", type=Path, help="a results folder (with runs/)")
    parser.add_argument("second", type=Path, help="another results folder (with runs/)")
    args = parser.parse_args(argv)
    for folder in (args.first, args.second):
        if not (folder / "runs").is_dir():
            parser.error(f"{folder} has no runs/ folder: give a profile's results folder, e.g. results/")
    compared, weighed, differences = compare(args.first, args.second)
    print("\n".join(differences))
    identical = compared - len({line.split(":")[0] for line in differences if "only in" not in line})
    print(f"{compared} runs in both folders: {identical} identical in history, final accuracies and every test "
          f"image's prediction; final weights compared for {weighed}; {len(differences)} difference(s)")
    return 0 if not differences else 1


if __name__ == "__main__":
    sys.exit(main())
