"""Bootstrap, paired test, Wilson and Bradley–Terry: known values and sanity checks."""

import math
import random

import numpy as np
import pytest

from evals.stats import Comparison, bootstrap_ci, bradley_terry, paired_test, wilson_interval


def test_wilson_known_values():
    # Reference values from the closed form (Wilson 1927), z = 1.96
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.27753), abs=1e-4)
    assert wilson_interval(5, 10) == pytest.approx((0.23659, 0.76341), abs=1e-4)
    assert wilson_interval(10, 10) == pytest.approx((0.72247, 1.0), abs=1e-4)
    # 81/263 by hand: p = .30798, centre = (p + z²/2n)/(1 + z²/n) = .31075,
    # half-width = z·sqrt(p(1-p)/n + z²/4n²)/(1 + z²/n) = .05546
    assert wilson_interval(81, 263) == pytest.approx((0.25529, 0.36621), abs=1e-4)
    lo, hi = wilson_interval(3, 4)
    assert 0 <= lo < 0.75 < hi <= 1
    assert all(math.isnan(x) for x in wilson_interval(0, 0))


def test_wilson_narrows_with_n():
    w = [hi - lo for lo, hi in (wilson_interval(n // 2, n) for n in (10, 100, 1000))]
    assert w[0] > w[1] > w[2]


def test_bootstrap_degenerate_cases():
    assert bootstrap_ci([2.0, 2.0, 2.0]).as_dict() == {"mean": 2.0, "lo": 2.0, "hi": 2.0, "n": 3}
    one = bootstrap_ci([0.7])
    assert (one.mean, one.lo, one.hi, one.n) == (0.7, 0.7, 0.7, 1)
    assert math.isnan(bootstrap_ci([]).mean)
    assert bootstrap_ci([1.0, None, 3.0]).n == 2  # missing values are left out


def test_bootstrap_interval_matches_normal_theory_and_is_seeded():
    rng = np.random.default_rng(1)
    x = rng.normal(5.0, 2.0, size=400)
    e = bootstrap_ci(x)
    se = x.std(ddof=1) / math.sqrt(len(x))
    assert e.lo < x.mean() < e.hi
    assert (e.hi - e.lo) == pytest.approx(2 * 1.96 * se, rel=0.15)
    assert bootstrap_ci(x) == e  # same seed, same interval (a re-opened run reads the same)


def test_bootstrap_coverage_is_near_95_percent():
    rng = np.random.default_rng(7)
    covered = 0
    trials = 300
    for t in range(trials):
        x = rng.binomial(1, 0.3, size=60).astype(float)  # like a per-item accuracy
        e = bootstrap_ci(x, resamples=1000, seed=t)
        covered += e.lo <= 0.3 <= e.hi
    assert 0.88 <= covered / trials <= 0.99


def test_paired_test_detects_a_real_difference_and_not_noise():
    rng = np.random.default_rng(3)
    base = rng.uniform(0, 1, 40)
    better = base + 0.1 + rng.normal(0, 0.05, 40)
    t = paired_test(better, base)
    assert t.mean_diff == pytest.approx(float(np.mean(better - base)))
    assert t.p_value < 0.001 and t.significant and t.lo > 0
    same = paired_test(base, base)
    assert same.p_value == 1.0 and not same.significant
    # under the null (differences symmetric around 0) the test rejects about 5% of the time
    rejections = sum(
        paired_test(rng.normal(0, 1, 30), np.zeros(30), permutations=2000, seed=s).significant for s in range(100)
    )
    assert rejections <= 12


def test_paired_test_pairs_items_and_skips_missing():
    t = paired_test([1.0, None, 0.5], [0.0, 1.0, 0.5])
    assert t.n == 2 and t.mean_diff == pytest.approx(0.5)
    with pytest.raises(ValueError):
        paired_test([1.0], [1.0, 2.0])


def simulate_votes(strengths: dict[str, float], n: int, seed: int, tie_rate: float = 0.0) -> list[Comparison]:
    rnd = random.Random(seed)
    names = list(strengths)
    out = []
    for _ in range(n):
        a, b = rnd.sample(names, 2)
        if rnd.random() < tie_rate:
            out.append(Comparison(a, b, 0.5))
            continue
        p = strengths[a] / (strengths[a] + strengths[b])
        out.append(Comparison(a, b, 1.0 if rnd.random() < p else 0.0))
    return out


def test_bradley_terry_recovers_planted_order():
    planted = {"tuned+rag": 8.0, "tuned": 4.0, "base+rag": 2.0, "base": 1.0}
    ratings = bradley_terry(simulate_votes(planted, 3000, seed=11, tie_rate=0.1))
    assert [r.player for r in ratings] == ["tuned+rag", "tuned", "base+rag", "base"]
    s = {r.player: r.strength for r in ratings}
    # ratios of strengths are what BT identifies; each planted ratio is 2
    for hi, lo in (("tuned+rag", "tuned"), ("tuned", "base+rag"), ("base+rag", "base")):
        assert s[hi] / s[lo] == pytest.approx(2.0, rel=0.3)
    assert sum(r.games for r in ratings) == 2 * 3000


def test_bradley_terry_mm_fixed_point_on_a_small_case():
    # A beats B 3 times of 4; with a negligible prior the MLE is s_A / s_B = 3
    comps = [Comparison("A", "B", 1.0)] * 3 + [Comparison("B", "A", 1.0)]
    r = {x.player: x.strength for x in bradley_terry(comps, prior=1e-6)}
    assert r["A"] / r["B"] == pytest.approx(3.0, rel=1e-3)


def test_bradley_terry_handles_unbeaten_and_winless_players():
    comps = [Comparison("always", "never", 1.0)] * 5
    ratings = bradley_terry(comps)
    assert [r.player for r in ratings] == ["always", "never"]
    assert all(math.isfinite(r.strength) and r.strength > 0 for r in ratings)
    assert bradley_terry([]) == []
    with pytest.raises(ValueError):
        bradley_terry([Comparison("a", "b", 2.0)])
