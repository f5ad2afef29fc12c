"""Verdicts as data: one rule (`judge`) that turns a measured effect and its 95% interval into one of four verdicts
on a directed claim, decided here and nowhere else (the four are described in docs/notebooks.md). `render` puts a
verdict into words; the words never decide anything.

Accuracy intervals come from paired designs (every model scores the same test images; seed i of one model is paired
with seed i of the other): a two-level bootstrap over test images (one draw for both models and every seed) and
seeds (`paired_difference`), and Holm's step-down correction over a table's comparisons (`judge_family`: each
interval at the level Holm tests it at, so a verdict and its interval never disagree).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class Verdict:
    claim: str  # the claim in words, e.g. "Para-F-1-6 (authors) beats ViT-6"
    ours: float  # our measured effect (difference in points, or a ratio)
    low: float  # our 95% interval
    high: float
    threshold: float  # the claim holds when the effect exceeds this (0 for "beats", 1 for "is faster")
    verdict: str  # supported, contradicted, inconclusive or not testable here (`judge`; docs/notebooks.md)
    reason: str  # why, in words (the interval's side, or why it cannot be tested)
    paper: float | None = None  # the paper's figure for the same effect, where it gives one
    minimum_detectable: float | None = None  # the effect the design detects 80% of the time, where it has one
    confidence: float = 0.95  # of the interval (below 0.95 never; above it after a multiple-comparison correction)
    p_value: float | None = None  # two-sided, of "the effect equals the threshold", uncorrected, where there is one

    def to_dict(self) -> dict:
        return asdict(self)


def judge(claim: str, ours: float, low: float, high: float, threshold: float = 0.0, paper: float | None = None,
          minimum_detectable: float | None = None, not_testable: str | None = None, confidence: float = 0.95,
          p_value: float | None = None, correction: str = "") -> Verdict:
    """The verdict on "the effect exceeds `threshold`" from our estimate `ours` and its `confidence` interval
    [low, high]. `not_testable` (a reason) overrides the interval: the measurement says nothing about the claim.
    `correction` names a multiple-comparison correction the interval's level comes from, for the reason."""
    if not_testable is None and not all(math.isfinite(v) for v in (ours, low, high, threshold)):
        raise ValueError(f"judge({claim!r}) needs finite numbers, got ours={ours}, interval [{low}, {high}], "
                         f"threshold={threshold}; pass not_testable='why' when there is no measurement")
    if not_testable is None and not low <= ours <= high:
        raise ValueError(f"judge({claim!r}): the estimate {ours} lies outside its interval [{low}, {high}]")
    if not 0.5 < confidence < 1:
        raise ValueError(f"judge({claim!r}): confidence={confidence} must be in (0.5, 1), e.g. 0.95")
    interval = f"{100 * confidence:.3g}% interval [{low:.3g}, {high:.3g}]" + (f" ({correction})" if correction else "")
    if not_testable is not None:
        verdict, reason = "not testable here", not_testable
    elif low > threshold:
        verdict, reason = "supported", f"the whole {interval} lies above {threshold:g}"
    elif high < threshold:
        verdict, reason = "contradicted", f"the whole {interval} lies below {threshold:g}"
    else:
        verdict, reason = "inconclusive", f"the {interval} contains {threshold:g}"
        if minimum_detectable is not None:
            reason += f"; this design detects effects of {minimum_detectable:.3g} or more"
    return Verdict(claim, ours, low, high, threshold, verdict, reason, paper, minimum_detectable, confidence, p_value)


def render(verdict: Verdict) -> str:
    """One line of words for a verdict."""
    paper = f"; paper {verdict.paper:g}" if verdict.paper is not None else ""
    if verdict.verdict == "not testable here":
        return f"{verdict.claim}: not testable here ({verdict.reason}){paper}."
    return (f"{verdict.claim}: {verdict.verdict} (ours {verdict.ours:.3g}, {100 * verdict.confidence:.3g}% interval "
            f"[{verdict.low:.3g}, {verdict.high:.3g}]; {verdict.reason}){paper}.")


# --- paired accuracy comparisons over seeds and test images -------------------------------------------------

BOOTSTRAP_RESAMPLES = 4000  # enough for the 2.5% tails and for Holm levels down to about 0.5% (20 per tail)


def _correctness(correct, name: str) -> np.ndarray:
    """`correct` as a (seeds, images) boolean array: one row per seed, the same images in the same order."""
    array = np.asarray(correct, dtype=bool)
    array = array[None, :] if array.ndim == 1 else array
    if array.ndim != 2 or array.shape[0] < 1 or array.shape[1] < 1:
        raise ValueError(f"{name} must be per-image correctness of shape (seeds, images), got shape {array.shape}")
    return array


def _bootstrap(per_image: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """Bootstrap replicates of the seed-mean of per-image means: the test images are resampled (one draw shared by
    every seed, since every seed is scored on the same images) and so are the seeds."""
    seeds, images = per_image.shape
    rng = np.random.default_rng(seed)
    image_draws = rng.integers(0, images, size=(resamples, images))
    # one sum per replicate and seed: (resamples, seeds), built seed by seed to keep memory at resamples x images
    per_seed = np.stack([per_image[s][image_draws].mean(axis=1) for s in range(seeds)], axis=1)
    if seeds == 1:
        return per_seed[:, 0]
    seed_draws = rng.integers(0, seeds, size=(resamples, seeds))
    return np.take_along_axis(per_seed, seed_draws, axis=1).mean(axis=1)


@dataclass(frozen=True)
class PairedDifference:
    """Accuracy of A minus accuracy of B in points, averaged over seeds, both scored on the same test images."""

    mean: float
    replicates: np.ndarray = field(repr=False)  # bootstrap replicates of `mean` (see `_bootstrap`)

    def interval(self, confidence: float = 0.95) -> tuple[float, float]:
        """Percentile interval of the bootstrap, widened to contain the estimate (it always does in practice)."""
        tail = 100 * (1 - confidence) / 2
        low, high = np.percentile(self.replicates, [tail, 100 - tail])
        return float(min(low, self.mean)), float(max(high, self.mean))

    @property
    def standard_error(self) -> float:
        return float(self.replicates.std(ddof=1))

    def p_value_against(self, threshold: float) -> float:
        """Two-sided bootstrap p-value of "the difference equals `threshold`": twice the smaller share of replicates
        on either side of it, so that the percentile interval at confidence 1 - p just reaches the threshold
        (interval and test never disagree)."""
        below, above = np.mean(self.replicates <= threshold), np.mean(self.replicates >= threshold)
        return float(min(1.0, 2 * min(below, above)))

    def minimum_detectable(self, alpha: float = 0.05, power: float = 0.8) -> float:
        """The smallest true difference this design finds with `power` at two-sided level `alpha`: (z + z) x SE."""
        return float((stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)) * self.standard_error)


def paired_difference(correct_a, correct_b, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0) -> PairedDifference:
    """A minus B from per-image correctness of shape (seeds, images), paired by row (seed) and column (image)."""
    a, b = _correctness(correct_a, "correct_a"), _correctness(correct_b, "correct_b")
    if a.shape != b.shape:
        raise ValueError(f"paired_difference needs the same seeds and images for both models, got shapes {a.shape} "
                         f"and {b.shape}")
    per_image = 100.0 * (a.astype(np.float64) - b.astype(np.float64))
    return PairedDifference(float(per_image.mean()), _bootstrap(per_image, resamples, seed))


def accuracy_interval(correct, confidence: float = 0.95, resamples: int = BOOTSTRAP_RESAMPLES,
                      seed: int = 0) -> tuple[float, float, float]:
    """Mean accuracy (points) over seeds and its bootstrap interval (test images and seeds resampled)."""
    per_image = 100.0 * _correctness(correct, "correct").astype(np.float64)
    accuracy = PairedDifference(float(per_image.mean()), _bootstrap(per_image, resamples, seed))
    return (accuracy.mean, *accuracy.interval(confidence))


def holm_levels(p_values: list[float], alpha: float = 0.05) -> list[float]:
    """The level Holm's step-down procedure tests each p-value at (in the order given): alpha / (m - rank) up to
    the first p-value that fails, and that failing level for every later one. A comparison is significant exactly
    when its p-value is below its level, and its (1 - level) interval then excludes no effect."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    m, levels, stopped = len(p_values), [alpha] * len(p_values), None
    for rank, i in enumerate(order):
        level = alpha / (m - rank) if stopped is None else stopped
        if stopped is None and p_values[i] >= level:
            stopped = level
        levels[i] = level
    return levels


@dataclass(frozen=True)
class PairedClaim:
    """One claim about accuracies, "A beats B by more than `threshold` points", with its measured difference."""

    claim: str
    difference: PairedDifference
    threshold: float = 0.0
    paper: float | None = None  # the paper's figure for the same difference, where it gives one


def judge_family(comparisons: list[PairedClaim], alpha: float = 0.05) -> list[Verdict]:
    """The verdict on each claim of a table that makes several: Holm's correction over the family, each interval
    at the level Holm tests it at, the minimum detectable difference at the nominal `alpha`. Each claim is tested
    against its own threshold ("loses under 1 point" against -1, not 0), so Holm orders the claims by the evidence
    on what they claim."""
    p_values = [c.difference.p_value_against(c.threshold) for c in comparisons]
    levels = holm_levels(p_values, alpha)  # alpha itself for a single claim
    correction = f"Holm over {len(comparisons)} comparisons" if len(comparisons) > 1 else ""
    return [judge(c.claim, c.difference.mean, *c.difference.interval(1 - level), c.threshold, c.paper,
                  c.difference.minimum_detectable(alpha), confidence=1 - level, p_value=p, correction=correction)
            for c, p, level in zip(comparisons, p_values, levels)]


def all_of(claim: str, verdicts: list[Verdict], paper: float | None = None) -> Verdict:
    """A claim that holds when every one of its parts does (e.g. "deeper branches beat Para-F-1-24" over 2-24,
    3-24 and 6-24): contradicted when any part is, else the parts' verdict where they all agree, else inconclusive.
    Its figure and interval are those of the weakest part (the lowest interval)."""
    if not verdicts:
        raise ValueError(f"all_of({claim!r}) needs at least one verdict")
    weakest = min(verdicts, key=lambda v: (v.verdict == "not testable here", v.low))
    kinds = {v.verdict for v in verdicts}
    word = "contradicted" if "contradicted" in kinds else kinds.pop() if len(kinds) == 1 else "inconclusive"
    parts = "; ".join(f"{v.claim}: {v.verdict}" for v in verdicts)
    return Verdict(claim, weakest.ours, weakest.low, weakest.high, weakest.threshold, word,
                   f"{sum(v.verdict == 'supported' for v in verdicts)} of {len(verdicts)} parts supported ({parts})",
                   paper, weakest.minimum_detectable, weakest.confidence, weakest.p_value)
