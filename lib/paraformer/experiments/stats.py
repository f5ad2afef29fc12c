"""Verdicts as data: one rule (`judge`) that turns a measured effect and its 95% interval into one of four verdicts
on a directed claim, decided here and nowhere else (the four are described in docs/notebooks.md). `render` puts a
verdict into words; the words never decide anything. Each verdict also carries the regime it was measured in
(`regime.Regime`: at a scale far below the paper's, it reads as a finding at that scale) and whether our interval
contains the paper's own figure (`paper_effect`).

Accuracy intervals come from paired designs (every model scores the same test images; seed i of one model is paired
with seed i of the other): a t interval over seeds that adds the test images' variance, with Satterthwaite's degrees
of freedom (`SeedsAndImages`; it holds its level with 3 seeds, where a bootstrap over seeds does not), and Holm's step-down correction over a table's comparisons (`judge_family`: each
interval at the level Holm tests it at, so a verdict and its interval never disagree).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from statistics import NormalDist

import numpy as np
from scipy import stats

from .regime import Regime, describe as describe_regime, speaks_for_the_paper, status as regime_status


VERDICTS = ("supported", "contradicted", "inconclusive", "not testable here")
SOURCES = ("paper", "summary", "ours")  # a claim's source: the paper's text, a third-party summary, or this suite


@dataclass(frozen=True)
class Verdict:
    claim: str  # the claim in words, e.g. "Para-F-1-6 (authors) beats ViT-6"
    ours: float  # our measured effect (difference in points, or a ratio)
    low: float  # our interval at `confidence`
    high: float
    threshold: float  # the claim holds when the effect exceeds this (0 for "beats", 1 for "is faster")
    verdict: str  # supported, contradicted, inconclusive or not testable here (`judge`; docs/notebooks.md)
    reason: str  # why, in words (the interval's side, or why it cannot be tested)
    paper: float | None = None  # the paper's figure for the same effect, where it gives one
    minimum_detectable: float | None = None  # the effect the design detects 80% of the time at its level
    confidence: float = 0.95  # of the interval (below 0.95 never; above it after a multiple-comparison correction)
    p_value: float | None = None  # two-sided, of "the effect equals the threshold", uncorrected, where there is one
    unit: str = "points"  # of ours, low, high and paper: "points", "epochs", or "x (A over B)" for a ratio of times
    paper_effect: str | None = None  # "inside" / "excluded": whether our interval contains the paper's figure
    regime: Regime | None = None  # the scale it was measured at, beside the paper's (`regime.status`)
    source: str = "paper"  # where the claim comes from (`SOURCES`)
    source_note: str = ""  # which text exactly, or what the source does not say
    caveat: str = ""  # what a reader must know to read the verdict, e.g. that it holds by construction

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def regime_status(self) -> str:
        return regime_status(self.regime)

    @property
    def at_scale_only(self) -> bool:
        """Measured in a regime that cannot speak for the paper's claim: a finding at this scale."""
        return self.verdict != "not testable here" and not speaks_for_the_paper(self.regime)


def paper_effect(paper: float | None, low: float, high: float) -> str | None:
    """Whether our interval contains the paper's figure for the same effect: "inside", "excluded", or None where
    the paper gives none or we have no interval."""
    if paper is None or not all(math.isfinite(v) for v in (paper, low, high)):
        return None
    return "inside" if low <= paper <= high else "excluded"


def judge(claim: str, ours: float, low: float, high: float, threshold: float = 0.0, paper: float | None = None,
          minimum_detectable: float | None = None, not_testable: str | None = None, confidence: float = 0.95,
          p_value: float | None = None, correction: str = "", unit: str = "points", regime: Regime | None = None,
          source: str = "paper", source_note: str = "") -> Verdict:
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
    if source not in SOURCES:
        raise ValueError(f"judge({claim!r}): source={source!r} must be one of {SOURCES}")
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
    effect = None if not_testable is not None else paper_effect(paper, low, high)
    return Verdict(claim, ours, low, high, threshold, verdict, reason, paper, minimum_detectable, confidence, p_value,
                   unit, effect, regime, source, source_note)


def _figure(value: float, unit: str) -> str:
    """"+0.75 points", "-1.3 epochs", or a ratio "2.5x (A over B)"."""
    return f"{value:.3g}{unit}" if unit.startswith("x") else f"{value:+.3g} {unit}"


def headline(verdict: Verdict, profile: str | None = None) -> str:
    """The verdict word with its scale: "contradicted at quick" where the regime cannot speak for the paper."""
    if not verdict.at_scale_only:
        return verdict.verdict
    where = profile or (verdict.regime.profile if verdict.regime else "this profile")
    return f"{verdict.verdict} at {where} ({verdict.regime_status})"


def render(verdict: Verdict) -> str:
    """One line of words for a verdict, e.g. "1-24 beats 1-1 on cifar10: inconclusive at quick (under-trained);
    ours +0.75 points [-0.27, 2.0] (ours 28-34%, paper 56-72%, linear 29%); paper's +15.6 excluded at this scale"."""
    paper = ""
    if verdict.paper is not None:
        paper = f"; paper's {_figure(verdict.paper, verdict.unit)}"
        if verdict.paper_effect is not None:
            paper += f" {verdict.paper_effect}" + (" at this scale" if verdict.at_scale_only else "")
    caveat = f" Note: {verdict.caveat}." if verdict.caveat else ""
    if verdict.verdict == "not testable here":
        return f"{verdict.claim}: not testable here ({verdict.reason}){paper}.{caveat}"
    regime = f" ({describe_regime(verdict.regime)})" if verdict.regime is not None else ""
    return (f"{verdict.claim}: {headline(verdict)}; ours {_figure(verdict.ours, verdict.unit)} "
            f"[{verdict.low:.3g}, {verdict.high:.3g}]{regime}{paper}.{caveat}")


# --- paired accuracy comparisons over seeds and test images -------------------------------------------------

def _correctness(correct, name: str) -> np.ndarray:
    """`correct` as a (seeds, images) boolean array: one row per seed, the same images in the same order."""
    array = np.asarray(correct, dtype=bool)
    array = array[None, :] if array.ndim == 1 else array
    if array.ndim != 2 or array.shape[0] < 1 or array.shape[1] < 1:
        raise ValueError(f"{name} must be per-image correctness of shape (seeds, images), got shape {array.shape}")
    return array


@dataclass(frozen=True)
class SeedsAndImages:
    """The seed-mean of per-image scores (seeds x images, in points) with an interval that holds its level with few
    seeds: a t interval whose variance adds the seed-to-seed part (the spread of the seeds' means, over the seeds)
    and the test-image part (the spread of the images' seed-means, over the images), with Welch-Satterthwaite's
    degrees of freedom. With 3 seeds that differ, the degrees of freedom fall toward 2 and the interval widens as a
    t interval over 3 seeds does; the two-level percentile bootstrap used before covered 85-93% at a nominal 95%
    in the simulation of tests/test_stats.py (a science review found 78-85%). Adding the two parts counts the seed-by-image noise twice, which errs
    on the wide side. With one seed the interval covers test-image sampling only (`seeds` says so)."""

    mean: float
    seed_part: float  # variance of the mean from seed to seed (points^2): var over seeds of their means / seeds
    image_part: float  # from the test images: var over images of their seed-means / images
    seeds: int
    images: int

    @property
    def standard_error(self) -> float:
        return math.sqrt(self.seed_part + self.image_part)

    @property
    def degrees_of_freedom(self) -> float:
        """Welch-Satterthwaite's: (a + b)^2 / (a^2 / (seeds - 1) + b^2 / (images - 1)), the seed part dropped with
        one seed (it has no estimate then) and the image part with one image."""
        terms = [(self.seed_part, self.seeds - 1), (self.image_part, self.images - 1)]
        denominator = sum(part ** 2 / df for part, df in terms if df > 0)
        total = self.seed_part + self.image_part
        return float(total ** 2 / denominator) if denominator > 0 else float("inf")

    def _t(self, probability: float) -> float:
        return float(stats.t.ppf(probability, self.degrees_of_freedom))

    def interval(self, confidence: float = 0.95) -> tuple[float, float]:
        half = self._t(1 - (1 - confidence) / 2) * self.standard_error
        return self.mean - half, self.mean + half

    def p_value_against(self, threshold: float) -> float:
        """Two-sided p-value of "the mean equals `threshold`" from the same t: the interval at confidence 1 - p
        just reaches the threshold, so interval and test never disagree."""
        if self.standard_error == 0:
            return 1.0 if self.mean == threshold else 0.0
        score = abs(self.mean - threshold) / self.standard_error
        return float(min(1.0, 2 * stats.t.sf(score, self.degrees_of_freedom)))

    def minimum_detectable(self, alpha: float = 0.05, power: float = 0.8) -> float:
        """The smallest true difference this design finds with `power` when tested at two-sided level `alpha` (the
        level the verdict actually used, e.g. Holm's): (t_(1 - alpha/2) + t_power) x SE at these degrees of
        freedom."""
        return (self._t(1 - alpha / 2) + self._t(power)) * self.standard_error


def _seeds_and_images(per_image: np.ndarray) -> SeedsAndImages:
    seeds, images = per_image.shape
    seed_means, image_means = per_image.mean(axis=1), per_image.mean(axis=0)
    seed_part = float(seed_means.var(ddof=1) / seeds) if seeds > 1 else 0.0
    image_part = float(image_means.var(ddof=1) / images) if images > 1 else 0.0
    return SeedsAndImages(float(per_image.mean()), seed_part, image_part, seeds, images)


# A paired difference is the seed-mean of per-image differences: the same estimator.
PairedDifference = SeedsAndImages


def paired_difference(correct_a, correct_b) -> SeedsAndImages:
    """Accuracy of A minus accuracy of B in points, from per-image correctness of shape (seeds, images), paired by
    row (seed) and column (image): both models scored on the same test images, seed i of one against seed i of
    the other."""
    a, b = _correctness(correct_a, "correct_a"), _correctness(correct_b, "correct_b")
    if a.shape != b.shape:
        raise ValueError(f"paired_difference needs the same seeds and images for both models, got shapes {a.shape} "
                         f"and {b.shape}")
    return _seeds_and_images(100.0 * (a.astype(np.float64) - b.astype(np.float64)))


def accuracy_interval(correct, confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean accuracy (points) over seeds and its interval (`SeedsAndImages`)."""
    accuracy = _seeds_and_images(100.0 * _correctness(correct, "correct").astype(np.float64))
    return (accuracy.mean, *accuracy.interval(confidence))


def wilson_interval(correct: int, total: int, confidence: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval (points) of one model's accuracy, `correct` of `total` test images: unlike the
    normal approximation it stays inside 0-100 and is honest on a handful of images (0 of 3 gives 0-56%)."""
    if total < 1 or not 0 <= correct <= total:
        raise ValueError(f"wilson_interval needs 0 <= correct <= total and total >= 1, got {correct} of {total}")
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    share = correct / total
    centre = (share + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(share * (1 - share) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return 100 * max(0.0, centre - half), 100 * min(1.0, centre + half)


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
    difference: SeedsAndImages
    threshold: float = 0.0
    paper: float | None = None  # the paper's figure for the same difference, where it gives one
    regime: Regime | None = None  # the arms' accuracies beside the paper's (`regime.Regime`)
    source: str = "paper"  # `SOURCES`
    source_note: str = ""


def judge_family(comparisons: list[PairedClaim], alpha: float = 0.05) -> list[Verdict]:
    """The verdict on each claim of a table that makes several: Holm's correction over the family, each interval
    at the level Holm tests it at, the minimum detectable difference at that level too. Each claim is tested
    against its own threshold ("loses under 1 point" against -1, not 0), so Holm orders the claims by the evidence
    on what they claim."""
    p_values = [c.difference.p_value_against(c.threshold) for c in comparisons]
    levels = holm_levels(p_values, alpha)  # alpha itself for a single claim
    correction = f"Holm over {len(comparisons)} comparisons" if len(comparisons) > 1 else ""
    return [judge(c.claim, c.difference.mean, *c.difference.interval(1 - level), c.threshold, c.paper,
                  c.difference.minimum_detectable(level), confidence=1 - level, p_value=p,
                  correction=_correction(correction, c.difference), regime=c.regime, source=c.source,
                  source_note=c.source_note)
            for c, p, level in zip(comparisons, p_values, levels)]


def _correction(correction: str, difference: SeedsAndImages) -> str:
    """What the interval is: t over seeds with the image-level variance, at its degrees of freedom, and Holm's."""
    kind = (f"t over {difference.seeds} seeds and {difference.images:,} test images, "
            f"{difference.degrees_of_freedom:.3g} df" if difference.seeds > 1
            else f"1 seed: test-image sampling only, {difference.images:,} images")
    return f"{kind}; {correction}" if correction else kind


def all_of(claim: str, verdicts: list[Verdict], paper: float | None = None, regime: Regime | None = None,
           source: str = "paper", source_note: str = "") -> Verdict:
    """A claim that holds when every one of its parts does (e.g. "deeper branches beat Para-F-1-24" over 2-24,
    3-24 and 6-24): contradicted when any part is, else the parts' verdict where they all agree, else inconclusive.
    Its figure and interval are those of the part that decides it: the weakest part (the lowest interval), or where
    a part is contradicted, the weakest contradicted part, so that a contradicted claim never shows an interval that
    contains its threshold. So is the paper's figure unless `paper` is given; its regime gathers every part's arms."""
    if not verdicts:
        raise ValueError(f"all_of({claim!r}) needs at least one verdict")
    kinds = {v.verdict for v in verdicts}
    word = "contradicted" if "contradicted" in kinds else next(iter(kinds)) if len(kinds) == 1 else "inconclusive"
    deciding = [v for v in verdicts if v.verdict == "contradicted"] or verdicts
    weakest = min(deciding, key=lambda v: (v.verdict == "not testable here", v.low))
    parts = "; ".join(f"{v.claim}: {v.verdict}" for v in verdicts)
    paper = weakest.paper if paper is None else paper  # the weakest part's own figure: the same comparison as ours
    regime = regime if regime is not None else _merged_regime([v.regime for v in verdicts])
    return Verdict(claim, weakest.ours, weakest.low, weakest.high, weakest.threshold, word,
                   f"{sum(v.verdict == 'supported' for v in verdicts)} of {len(verdicts)} parts supported ({parts})",
                   paper, weakest.minimum_detectable, weakest.confidence, weakest.p_value, weakest.unit,
                   paper_effect(paper, weakest.low, weakest.high) if weakest.verdict != "not testable here" else None,
                   regime, source, source_note)


def _merged_regime(regimes: list[Regime | None]) -> Regime | None:
    """One regime for a claim made of parts: every part's arms (each arm once), the first part's scale."""
    known = [r for r in regimes if r is not None]
    if not known:
        return None
    arms = tuple(dict.fromkeys(a for r in known for a in r.arms))
    paper_arms = tuple(dict.fromkeys(a for r in known for a in r.paper_arms))
    return replace(known[0], arms=arms, paper_arms=paper_arms)
