"""Notebook parameters that fail loudly: a misspelt `papermill -p` name, or an unknown profile, stops the notebook.

Papermill only warns about a parameter that the notebook's `parameters` cell does not define, and then runs the
notebook with its defaults. So every notebook ends its parameters cell with
`declare_parameters(namespace=globals())`, which records the names defined so far, and starts the next code cell
with `check_parameters(globals())`. Papermill puts its `injected-parameters` cell between the two, so every name
that cell binds and the parameters cell did not is a misspelt or unknown parameter. (The keyword matters:
papermill reads a line without "=" in the parameters cell as the continuation of the parameter above it, and would
show `declare_parameters(globals())` as part of that parameter's default.)

`python -m paraformer.notebook --check-profile NAME` checks a profile name in one line before any notebook starts
(what `make reproduce` does first).
"""

from __future__ import annotations

import argparse
import inspect
import sys

from .config import ConfigError

# IPython binds these in every kernel's namespace, and more of them (_, _i3, Out[3] as _3) as cells run.
IPYTHON_NAMES = frozenset({"In", "Out", "get_ipython", "exit", "quit", "open"})
# Kept in the namespace itself, so that each kernel (and each test's namespace) has its own record.
_RECORD = "_paraformer_parameters"


class UnknownParameterError(ConfigError):
    """Parameters given to a notebook that its parameters cell does not define."""

    def __init__(self, unknown: list[str], known: list[str]):
        self.unknown = tuple(unknown)
        self.known = tuple(known)
        super().__init__(f"unknown notebook parameter(s) {list(self.unknown)}; this notebook's parameters are "
                         f"{list(self.known)}")


def _values(namespace: dict) -> set[str]:
    """The names that could be parameters: papermill passes only values, never functions or modules, so the
    imports of declare_parameters and check_parameters themselves are left out."""
    return {name for name, value in namespace.items() if not name.startswith("_") and name not in IPYTHON_NAMES
            and not (inspect.ismodule(value) or callable(value))}


def declare_parameters(namespace: dict) -> None:
    """The last line of a notebook's parameters cell: every value bound so far is one of its parameters."""
    namespace[_RECORD] = {"parameters": sorted(_values(namespace)), "checked": False}


def check_parameters(namespace: dict) -> None:
    """The first line of the code cell after the parameters cell: fail on names papermill injected that the
    parameters cell does not define, and on an unknown profile, which then becomes the active profile (so the
    notebook's results go to that profile's folder)."""
    record = namespace.get(_RECORD)
    if record is None:
        raise ConfigError("the notebook's parameters cell must end with declare_parameters(namespace=globals()) "
                          "(from paraformer.notebook)")
    # Papermill injects only between the parameters cell and this one. Run again by hand without the parameters
    # cell, this cell would see the names of the cells after it, which are no parameters of anyone's.
    if not record["checked"]:
        unknown = sorted(_values(namespace) - set(record["parameters"]))
        if unknown:
            raise UnknownParameterError(unknown, record["parameters"])
        record["checked"] = True
    if "profile" in namespace:
        from .experiments import get_profile  # here, so that a misspelt parameter fails before torch is loaded

        get_profile(namespace["profile"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m paraformer.notebook", description=__doc__.splitlines()[0])
    parser.add_argument("--check-profile", metavar="NAME", required=True,
                        help="exit 2 with one line on stderr unless NAME is a profile")
    args = parser.parse_args(argv)
    from .experiments import get_profile

    try:
        get_profile(args.check_profile)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
