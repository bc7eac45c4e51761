"""Intervals and tests: bootstrap confidence intervals for a mean, a paired test between two
arms, Wilson intervals for win rates, and Bradley–Terry ratings from pairwise votes.

All resampling is seeded, so a stored run re-opened later shows the same intervals."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

Z95 = 1.959963984540054  # two-sided 95% normal quantile


@dataclass(frozen=True)
class Estimate:
    mean: float
    lo: float
    hi: float
    n: int

    def as_dict(self) -> dict:
        return {"mean": self.mean, "lo": self.lo, "hi": self.hi, "n": self.n}


def bootstrap_ci(
    values: Sequence[float] | np.ndarray, *, confidence: float = 0.95, resamples: int = 2000, seed: int = 0
) -> Estimate:
    """Mean of `values` with a percentile-bootstrap interval: resample the items with
    replacement `resamples` times and take the (1±confidence)/2 quantiles of the means.
    One value gives a zero-width interval; no values give NaN."""
    x = np.asarray([v for v in values if v is not None], dtype=np.float64)
    n = len(x)
    if n == 0:
        return Estimate(math.nan, math.nan, math.nan, 0)
    mean = float(x.mean())
    if n == 1:
        return Estimate(mean, mean, mean, 1)
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, n, size=(resamples, n))].mean(axis=1)
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(means, [alpha, 1 - alpha])
    return Estimate(mean, float(lo), float(hi), n)


@dataclass(frozen=True)
class PairedTest:
    """Result of comparing arm A with arm B on the items both have a value for."""

    mean_diff: float  # mean of (A - B) per item
    lo: float  # bootstrap 95% interval of the mean difference
    hi: float
    p_value: float  # two-sided, paired sign-flip permutation test
    n: int
    method: str = "paired permutation test (random sign flips of per-item differences)"

    @property
    def significant(self) -> bool:
        return self.p_value < 0.05

    def as_dict(self) -> dict:
        return {
            "mean_diff": self.mean_diff,
            "lo": self.lo,
            "hi": self.hi,
            "p_value": self.p_value,
            "n": self.n,
            "significant": self.significant,
            "method": self.method,
        }


def paired_test(a: Sequence[float], b: Sequence[float], *, permutations: int = 10000, seed: int = 0) -> PairedTest:
    """Paired permutation test of H0 "A and B are exchangeable on each item": under H0 each
    per-item difference is as likely to have either sign, so flip signs at random and count
    how often |mean| is at least the observed one. The p-value uses (count+1)/(draws+1), so it
    is never 0. Items where either value is missing are left out (pairs stay aligned)."""
    if len(a) != len(b):
        raise ValueError("paired samples differ in length")
    d = np.asarray([x - y for x, y in zip(a, b) if x is not None and y is not None], dtype=np.float64)
    n = len(d)
    if n == 0:
        return PairedTest(math.nan, math.nan, math.nan, math.nan, 0)
    observed = abs(d.mean())
    ci = bootstrap_ci(d, seed=seed)
    if np.allclose(d, 0):
        return PairedTest(float(d.mean()), ci.lo, ci.hi, 1.0, n)
    rng = np.random.default_rng(seed)
    signs = rng.choice(np.array([-1.0, 1.0]), size=(permutations, n))
    flipped = np.abs((signs * d).mean(axis=1))
    extreme = int((flipped >= observed - 1e-12).sum())
    return PairedTest(float(d.mean()), ci.lo, ci.hi, (extreme + 1) / (permutations + 1), n)


def wilson_interval(successes: float, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a proportion (stays inside [0, 1] and behaves at 0/n and n/n,
    unlike the normal approximation)."""
    if n <= 0:
        return (math.nan, math.nan)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


@dataclass(frozen=True)
class Comparison:
    """One pairwise outcome for Bradley–Terry: `score` is 1 if `first` won, 0 if `second`
    won, 0.5 for a tie."""

    first: str
    second: str
    score: float


@dataclass(frozen=True)
class Rating:
    player: str
    strength: float  # Bradley–Terry strength; P(i beats j) = s_i / (s_i + s_j)
    elo: float  # the same on a familiar scale: 1000 + 400·log10(strength / geometric mean)
    games: float


def bradley_terry(
    comparisons: Iterable[Comparison], *, prior: float = 0.5, iterations: int = 10000, tol: float = 1e-10
) -> list[Rating]:
    """Bradley–Terry strengths by the MM algorithm (Hunter 2004):

        s_i <- W_i / sum_j n_ij / (s_i + s_j)

    where W_i counts i's wins (a tie is half a win for each side) and n_ij the games between
    i and j. A player who never won would get strength 0, and players in separate groups
    have no common scale, so each player also plays `prior` virtual wins and `prior` virtual
    losses against a fixed reference player of strength 1 (a weak prior that keeps every
    strength finite and positive and barely moves well-measured players).
    Returns ratings sorted best first."""
    comps = list(comparisons)
    players = sorted({c.first for c in comps} | {c.second for c in comps})
    if not players:
        return []
    index = {p: i for i, p in enumerate(players)}
    m = len(players)
    wins = np.zeros(m)
    games = np.zeros((m, m))
    for c in comps:
        if not 0.0 <= c.score <= 1.0:
            raise ValueError(f"comparison score must be in [0, 1], got {c.score}")
        i, j = index[c.first], index[c.second]
        if i == j:
            continue
        wins[i] += c.score
        wins[j] += 1.0 - c.score
        games[i, j] += 1
        games[j, i] += 1
    s = np.ones(m)
    for _ in range(iterations):
        denom = (games / (s[:, None] + s[None, :])).sum(axis=1) + 2 * prior / (s + 1.0)
        new = (wins + prior) / denom
        if np.max(np.abs(np.log(new) - np.log(s))) < tol:
            s = new
            break
        s = new
    geo = math.exp(float(np.log(s).mean()))
    ratings = [
        Rating(p, float(s[index[p]]), 1000 + 400 * math.log10(s[index[p]] / geo), float(games[index[p]].sum()))
        for p in players
    ]
    return sorted(ratings, key=lambda r: -r.strength)
