"""A run's progress on screen: one tick per epoch, and in a notebook one line per run.

In a Jupyter kernel the progress is one output that each epoch replaces (`LiveLine`, an IPython display handle
with a text and an HTML form, no widget), so that what a saved notebook keeps is the run's summary line and
renders without a live kernel; under papermill (PARAFORMER_PROGRESS=text, set by the Makefile) nothing is shown
while the run trains and its summary line is printed when it ends (`SummaryLine`), one line per run in the executed
notebook and in the `make reproduce` log. Outside a kernel (a terminal, pytest) tqdm: a bar, or with
PARAFORMER_PROGRESS=text a plain line per epoch. Every epoch's numbers are in the run's step log (docs/logs.md).
"""

from __future__ import annotations

import html
import os
import sys
import time

import torch

from ..core.config import Recipe


def progress_bar(total: int, desc: str, initial: int, enabled: bool):
    """An object with tqdm's `set_postfix`, `update` and `close` (what `train` calls) for a run of `total` epochs
    resumed after `initial`; None when not `enabled`."""
    if not enabled:
        return None
    text = os.environ.get("PARAFORMER_PROGRESS") == "text"
    display = _kernel_display()
    if display is not None:
        return SummaryLine(total, desc, initial) if text else LiveLine(total, desc, initial, display)
    from tqdm import tqdm
    if text:
        # no bar and no width limit: a fixed width cut the line mid-number once the metrics were appended
        return tqdm(total=total, desc=desc, initial=initial, unit="epoch", file=sys.stdout, mininterval=0,
                    dynamic_ncols=False, ncols=None,
                    bar_format="{desc}: epoch {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}{postfix}]")
    return tqdm(total=total, desc=desc, initial=initial, unit="epoch")


def _kernel_display():
    """IPython's `display` inside a Jupyter kernel (papermill's too); None in a terminal, a plain IPython shell
    or where IPython is not installed."""
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    shell = get_ipython()
    if shell is None or not hasattr(shell, "kernel"):
        return None
    from IPython.display import display
    return display


def duration_text(seconds: float) -> str:
    """"8.2 s", "3 min 04 s", "2 h 05 min"."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, seconds = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


class RunProgress:
    """A run's epochs so far and its latest numbers, as one line of text; `train` calls `set_postfix`, `update`
    and `close` on it as on a tqdm bar."""

    def __init__(self, total: int, desc: str, initial: int = 0, clock=time.perf_counter):
        self.total, self.desc, self.initial, self.n = total, desc, initial, initial
        self.postfix: dict[str, str] = {}
        self.clock, self.started = clock, clock()
        self.closed = False

    def set_postfix(self, refresh: bool = True, **values) -> None:
        self.postfix = {name: str(value) for name, value in values.items()}

    def update(self, n: int = 1) -> None:
        self.n += n
        self.shown()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.shown()

    def shown(self) -> None:
        """Show the current line (here: nothing; each form of progress shows it its own way)."""

    def line(self) -> str:
        """"<run> [cpu]: epoch 3/5 in 8.2 s, loss=1.042, acc=75.00"; "stopped at epoch 3/5" for a run closed
        before its last epoch (an error, an interrupt), "epochs 3-5/5" for one resumed after epoch 2."""
        epochs = f"epochs {self.initial + 1}-{self.n}/{self.total}" if 0 < self.initial < self.n \
            else f"epoch {self.n}/{self.total}"
        stopped = "stopped at " if self.closed and self.n < self.total else ""
        numbers = "".join(f", {name}={value}" for name, value in self.postfix.items())
        return f"{self.desc}: {stopped}{epochs} in {duration_text(self.clock() - self.started)}{numbers}"


class SummaryLine(RunProgress):
    """Under papermill: the run's line, printed once when it ends."""

    def shown(self) -> None:
        if self.closed:
            print(self.line(), flush=True)


class LiveLine(RunProgress):
    """In JupyterLab: one output, replaced at every epoch and at the end, so that a saved notebook keeps the
    summary line; its HTML form has a progress bar while the run trains."""

    def __init__(self, total: int, desc: str, initial: int, display, clock=time.perf_counter):
        super().__init__(total, desc, initial, clock)
        self.handle = display(self, display_id=True)

    def shown(self) -> None:
        self.handle.update(self)

    def __repr__(self) -> str:
        return self.line()

    def _repr_html_(self) -> str:
        bar = "" if self.closed else f"<progress value='{self.n}' max='{self.total}'></progress> "
        return f"<div style='font-family:monospace'>{bar}{html.escape(self.line())}</div>"


def progress_label(name: str, recipe: Recipe, device: torch.device) -> str:
    """The run's name, with its training method where the name does not say it (a custom name such as
    "cifar10-task2-expand" says what the run is; "joint" beside it would not), and the device."""
    method = "" if recipe.method == "joint" or name.endswith(f"-{recipe.method}") else f" ({recipe.method})"
    return f"{name}{method} [{device.type}]"
