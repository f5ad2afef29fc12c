"""Verdicts as data: one rule that turns a measured difference and its interval into an answer to a claim.

Every claim the suite checks is a directed comparison ("A beats B", "the ratio exceeds 2"): a measured effect,
its 95% interval, the paper's figure where it gives one, and one of four verdicts, decided here and nowhere else:
- *supported*: the whole interval lies on the claim's side of its threshold;
- *contradicted*: the whole interval lies on the other side;
- *inconclusive*: the interval straddles the threshold; the minimum detectable difference of the design (what a
  true effect must be to be found 80% of the time) says how large an effect could hide in it;
- *not testable here*: the measurement cannot bear on the claim (a reason is required, e.g. a CPU cannot show a
  GPU pipeline's overlap).
`render` puts a verdict into words; the words never decide anything.

The tests behind the intervals are for paired designs, since every model is scored on the same test images:
McNemar's exact test on per-image correctness for one seed, and Holm's step-down correction where a table makes
several comparisons.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from scipy import stats

VERDICTS = ("supported", "contradicted", "inconclusive", "not testable here")


@dataclass(frozen=True)
class Verdict:
    claim: str  # the claim in words, e.g. "Para-F-1-6 (authors) beats ViT-6"
    ours: float  # our measured effect (difference in points, or a ratio)
    low: float  # our 95% interval
    high: float
    threshold: float  # the claim holds when the effect exceeds this (0 for "beats", 1 for "is faster")
    verdict: str  # one of VERDICTS
    reason: str  # why, in words (the interval's side, or why it cannot be tested)
    paper: float | None = None  # the paper's figure for the same effect, where it gives one
    minimum_detectable: float | None = None  # for an inconclusive verdict: see module docstring

    def to_dict(self) -> dict:
        return asdict(self)


def judge(claim: str, ours: float, low: float, high: float, threshold: float = 0.0, paper: float | None = None,
          minimum_detectable: float | None = None, not_testable: str | None = None) -> Verdict:
    """The verdict on "the effect exceeds `threshold`" from our estimate `ours` and its interval [low, high].
    `not_testable` (a reason) overrides the interval: the measurement says nothing about the claim."""
    values = (ours, low, high, threshold)
    if not_testable is None and not all(math.isfinite(v) for v in values):
        raise ValueError(f"judge({claim!r}) needs finite numbers, got ours={ours}, interval [{low}, {high}], "
                         f"threshold={threshold}; pass not_testable='why' when there is no measurement")
    if not_testable is None and not low <= ours <= high:
        raise ValueError(f"judge({claim!r}): the estimate {ours} lies outside its interval [{low}, {high}]")
    if not_testable is not None:
        verdict, reason = "not testable here", not_testable
    elif low > threshold:
        verdict, reason = "supported", f"the whole 95% interval [{low:.3g}, {high:.3g}] lies above {threshold:g}"
    elif high < threshold:
        verdict, reason = "contradicted", f"the whole 95% interval [{low:.3g}, {high:.3g}] lies below {threshold:g}"
    else:
        verdict = "inconclusive"
        reason = f"the 95% interval [{low:.3g}, {high:.3g}] contains {threshold:g}"
        if minimum_detectable is not None:
            reason += f"; this design detects effects of {minimum_detectable:.3g} or more"
    return Verdict(claim, ours, low, high, threshold, verdict, reason, paper,
                   minimum_detectable if verdict == "inconclusive" else None)


def render(verdict: Verdict) -> str:
    """One line of words for a verdict."""
    paper = f"; paper {verdict.paper:g}" if verdict.paper is not None else ""
    if verdict.verdict == "not testable here":
        return f"{verdict.claim}: not testable here ({verdict.reason}){paper}."
    return (f"{verdict.claim}: {verdict.verdict} (ours {verdict.ours:.3g}, 95% interval [{verdict.low:.3g}, "
            f"{verdict.high:.3g}]; {verdict.reason}){paper}.")


def mcnemar(correct_a, correct_b) -> float:
    """Two-sided exact McNemar p-value that models A and B are equally accurate, from their per-image correctness
    (booleans, the same images in the same order): a binomial test on the images where exactly one is right."""
    a, b = list(map(bool, correct_a)), list(map(bool, correct_b))
    if len(a) != len(b) or not a:
        raise ValueError(f"mcnemar needs two equally long, non-empty lists of per-image correctness, got {len(a)} "
                         f"and {len(b)}")
    only_a = sum(x and not y for x, y in zip(a, b))
    only_b = sum(y and not x for x, y in zip(a, b))
    if only_a + only_b == 0:
        return 1.0
    return float(stats.binomtest(only_a, only_a + only_b, 0.5).pvalue)


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error control), in the order given: compare each with the
    level itself. NaN (no test) stays NaN and does not count towards the family."""
    indexed = sorted((p, i) for i, p in enumerate(p_values) if not math.isnan(p))
    m, adjusted, running = len(indexed), [float("nan")] * len(p_values), 0.0
    for rank, (p, i) in enumerate(indexed):
        running = max(running, min(1.0, (m - rank) * p))  # adjusted values never decrease with rank
        adjusted[i] = running
    return adjusted


def paired_minimum_detectable(discordant_fraction: float, test_images: int, alpha: float = 0.05,
                              power: float = 0.8) -> float:
    """The smallest accuracy difference (points) that a paired comparison on `test_images` images detects with
    `power` at two-sided level `alpha`, when a fraction `discordant_fraction` of images is right for exactly one of
    the two models (normal approximation to McNemar's test)."""
    if not 0 < discordant_fraction <= 1 or test_images < 1:
        raise ValueError(f"discordant_fraction={discordant_fraction} must be in (0, 1] and test_images="
                         f"{test_images} at least 1")
    z = stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)
    return 100 * z * math.sqrt(discordant_fraction / test_images)


def difference_noise(accuracy: float, test_images: int) -> float:
    """Two standard errors (in points) of the difference between two accuracies near `accuracy` percent, each
    measured on `test_images` predictions: what a difference must exceed to stand out from test-set noise."""
    p = accuracy / 100
    return 2 * math.sqrt(2) * 100 * math.sqrt(p * (1 - p) / test_images)


def paired_p_value(mean: float, std: float, n: int) -> float:
    """Two-sided p-value of a paired t-test that the mean of `n` per-seed differences is zero (NaN for n < 2).
    It measures seed-to-seed variation only: every seed is tested on the same test images."""
    if n < 2 or not math.isfinite(mean) or not math.isfinite(std):
        return float("nan")
    if std == 0:
        return 0.0 if mean else 1.0
    return float(2 * stats.t.sf(abs(mean) / (std / math.sqrt(n)), df=n - 1))
