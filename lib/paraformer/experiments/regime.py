"""The regime a claim was measured in, beside the paper's, and the one rule that says whether our measurement can
speak for the paper's claim or only for its own scale (`status`).

A verdict from models that have barely started learning is a finding about the start of training, not about the
paper's trained models. Two measurable signs, each a rule here and nowhere else:

- **under-trained**: the arms' mean accuracy does not beat a logistic regression on the same pixels and split (the
  linear baseline, `experiments.linear_baseline`) by `LINEAR_MARGIN` points. A Transformer that a linear model
  matches has not learned what the paper's models did.
- **far below the paper**: the arms' mean accuracy is less than `FAR_BELOW` of the paper's distance above chance
  (e.g. CIFAR-10, chance 10%: the paper's arms at 56-80% average 68%, 58 points above chance; ours at 31% are 21
  points above it, under half of 58).

Otherwise the regime is "comparable"; with neither a paper figure nor a baseline it is "unknown". Speed claims
carry no accuracy regime (`measure` says what the arms' figures are).
"""

from __future__ import annotations

from dataclasses import dataclass

LINEAR_MARGIN = 2.0  # points: the arms must beat the linear baseline by this much to count as trained
FAR_BELOW = 0.5  # the arms' distance above chance, as a share of the paper's, under which a regime is far below

STATUSES = ("comparable", "far below the paper", "under-trained", "unknown")


@dataclass(frozen=True)
class Regime:
    """Where a claim's arms were measured: our figures for each arm beside the paper's, and the scale."""

    profile: str  # the profile whose runs these are (quick, cpu, gpu, paper, ci)
    arms: tuple[float, ...]  # each arm's mean accuracy over seeds (points)
    paper_arms: tuple[float, ...] = ()  # the paper's accuracy for the same arms, where it gives them (points)
    chance: float | None = None  # accuracy of a uniform guess: 100 / classes (points)
    linear: float | None = None  # the linear baseline on the same images and split (points)
    epochs: float | None = None  # our training epochs
    train_images: int | None = None  # our training images (after any validation hold-out)
    paper_epochs: float | None = None  # the paper's, where it says
    paper_train_images: int | None = None

    def __post_init__(self):
        if not self.arms:
            raise ValueError(f"Regime({self.profile!r}) needs each arm's accuracy; got none")

    @property
    def mean(self) -> float:
        return sum(self.arms) / len(self.arms)

    @property
    def paper_mean(self) -> float | None:
        return sum(self.paper_arms) / len(self.paper_arms) if self.paper_arms else None


def under_trained(regime: Regime) -> bool:
    """The arms' mean accuracy does not beat the linear baseline by `LINEAR_MARGIN` points."""
    return regime.linear is not None and regime.mean < regime.linear + LINEAR_MARGIN


def far_below(regime: Regime) -> bool:
    """The arms' mean is under `FAR_BELOW` of the paper's mean distance above chance."""
    if regime.paper_mean is None or regime.chance is None:
        return False
    return regime.mean - regime.chance < FAR_BELOW * (regime.paper_mean - regime.chance)


def status(regime: Regime | None) -> str:
    """One of `STATUSES`: under-trained first (it needs no paper figure), then far below the paper's."""
    if regime is None:
        return "unknown"
    if under_trained(regime):
        return "under-trained"
    if far_below(regime):
        return "far below the paper"
    if regime.linear is None and regime.paper_mean is None:
        return "unknown"
    return "comparable"


def speaks_for_the_paper(regime: Regime | None) -> bool:
    """Whether a verdict measured in `regime` may be read as one on the paper's claim (else: at this scale only).
    An unknown regime (no paper figure, no baseline: e.g. a speed claim) is judged on its own terms."""
    return status(regime) in ("comparable", "unknown")


def _span(values: tuple[float, ...]) -> str:
    low, high = min(values), max(values)
    return f"{low:.0f}%" if round(low) == round(high) else f"{low:.0f}-{high:.0f}%"


def describe(regime: Regime) -> str:
    """A few words: "ours 28-34%, paper 56-80%, linear 29%; 5 epochs, 2,500 images"."""
    parts = [f"ours {_span(regime.arms)}"]
    if regime.paper_arms:
        parts.append(f"paper {_span(regime.paper_arms)}")
    if regime.linear is not None:
        parts.append(f"linear {regime.linear:.0f}%")
    scale = []
    if regime.epochs is not None:
        scale.append(f"{regime.epochs:g} epochs")
    if regime.train_images is not None:
        scale.append(f"{regime.train_images:,} images")
    return ", ".join(parts) + (f"; {', '.join(scale)}" if scale else "")
