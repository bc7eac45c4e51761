"""Abstention (retrieval/abstain.py): the names a question mentions, the support head on a small
planted corpus, the threshold, and the AUC / threshold helpers of benchmarks/abstention.py."""

import functools
import importlib.util
import math
import sys

import pytest

from assistant.prompting import Passage
from retrieval import abstain

from .conftest import REPO


@functools.cache
def _benchmark():
    spec = importlib.util.spec_from_file_location("abstention_benchmark", REPO / "benchmarks" / "abstention.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


# ---- names ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "question, names",
    [
        ("How much is the Tidewalker 10?", ["Tidewalker 10"]),
        ("How much is a ticket from Pellmouth Central to Kirkby Wendle?", ["Pellmouth Central", "Kirkby Wendle"]),
        ("What's the speed limit on Lark's Ford Viaduct?", ["Lark's Ford Viaduct"]),
        ("My daughter is small. What height range is the Saltmarsh 20 meant for?", ["Saltmarsh 20"]),
        ("Once you get my return, how soon is the refund sent?", []),
        ("I'm new here: do you sell bikes?", []),
        ("how heavy is the tidewalker city bike", []),
    ],
)
def test_question_names(question, names):
    assert abstain.question_names(question) == names


def test_missing_names_match_phrases_folding_case_plurals_and_possessives():
    passages = [
        Passage(1, "a.md", "The Gullwing E-Cargo's battery is 500 Wh. Open on Sundays.", heading="Kestrel Rail")
    ]
    assert abstain.missing_names("How big is the gullwing e-cargo battery?", passages) == []
    assert abstain.missing_names("Is the Gullwing E-Cargo open on Sunday?", passages) == []
    assert abstain.missing_names("Who runs Kestrel Rail?", passages) == []  # the heading counts
    # a near miss is missing: the phrase must be there, not just its words
    assert abstain.missing_names("How big is the Gullwing 500 battery?", passages) == ["Gullwing 500"]
    assert abstain.missing_names("Do you sell the Tidewalker?", passages) == ["Tidewalker"]


# ---- the head and its threshold ---------------------------------------------------------------
def test_head_is_a_probability_rising_with_each_signal():
    base = {"names": 1.0, "dense": 0.5, "sentence": 0.6}
    s = abstain.score(base)
    assert 0.0 < s < 1.0
    for key in base:
        assert abstain.score({**base, key: base[key] + 0.1}) > s
    assert abstain.score({**base, "names": 0.0}) < s
    assert 0.0 <= abstain.score({"names": -1e6, "dense": -1e6, "sentence": -1e6}) < 1e-9  # no overflow


def test_decide_threshold_and_reasons():
    passages = [Passage(1, "a.md", "The Tidewalker 8 costs €689.", scores={"coverage": 0.6}, heading="Bikes")]
    question = "How much is the Tidewalker 8?"
    s = abstain.support(question, passages, 0.7)
    answered = abstain.decide(question, passages, 0.7, min_score=s)  # support >= threshold answers
    assert not answered.abstain and answered.passages == passages and "support" in answered.reason
    declined = abstain.decide(question, passages, 0.7, min_score=math.nextafter(s, 2.0))
    assert declined.abstain and declined.passages == passages  # the closest passages still come back
    assert "support" in declined.reason and "mention" not in declined.reason
    missing = abstain.decide("How much is the Tidewalker 10?", passages, 0.7, abstain.DEFAULT_MIN_SCORE)
    assert missing.abstain and "'Tidewalker 10'" in missing.reason
    empty = abstain.decide(question, [], 0.7, abstain.DEFAULT_MIN_SCORE)
    assert empty.abstain and "empty" in empty.reason and empty.passages == []
    assert abstain.support(question, [], 0.7) == 0.0


def test_planted_corpus_answerable_scores_above_a_question_about_a_missing_entity(kb, docs_dir):
    kb.add_paths([docs_dir])
    k = 4

    def support(question):
        passages, best = kb._search(question, k, "hybrid")
        return abstain.support(question, passages, best), abstain.decide(
            question, passages, best, abstain.DEFAULT_MIN_SCORE
        )

    fare, fare_decision = support("What is the winter fare for a foot passenger?")
    other, other_decision = support("What is the winter fare on the Seahorse Express?")
    car, car_decision = support("How much is the car fare on the Gull Island ferry?")
    tern, tern_decision = support("How much is the car fare on the Tern Island ferry?")
    assert fare > other and car > tern
    assert not fare_decision.abstain and not car_decision.abstain
    assert other_decision.abstain and "'Seahorse Express'" in other_decision.reason
    assert tern_decision.abstain and "'Tern Island'" in tern_decision.reason
    off_topic, decision = support("Who painted the Mona Lisa?")
    assert off_topic < abstain.DEFAULT_MIN_SCORE and decision.abstain and decision.passages


# ---- the benchmark's helpers -------------------------------------------------------------------
def test_roc_auc_on_a_hand_computed_example():
    bench = _benchmark()
    # pairs (pos, neg): 0.9>0.5, 0.9>0.4, 0.4<0.5, 0.4=0.4 (half), 0.6>0.5, 0.6>0.4 -> 4.5 / 6
    assert bench.roc_auc([0.9, 0.4, 0.6], [0.5, 0.4]) == pytest.approx(0.75)
    assert bench.roc_auc([2, 3], [0, 1]) == 1.0
    assert bench.roc_auc([0, 1], [2, 3]) == 0.0
    assert bench.roc_auc([1, 1], [1]) == 0.5
    with pytest.raises(ValueError):
        bench.roc_auc([], [1.0])


def test_named_signals_score_the_sentences_of_the_passages_that_name_what_is_asked():
    bench = _benchmark()
    shell = Passage(1, "helmets.md", "It has 8 vents. It weighs 300 g.", heading="Beacon Shell")
    lamp = Passage(2, "helmets.md", "The Little Lamp has a rear LED. It comes in three colours.", heading="Helmets")
    passages = [shell, lamp]
    near_miss = "How many vents does the Little Lamp have?"
    named, local = bench.named_signals(near_miss, passages)
    # the best sentence overall answers for the other helmet; the Little Lamp's say nothing of vents
    assert named < abstain.sentence_score(near_miss, passages) - 0.1
    assert local == 0.0  # the name is not in the best sentence, its predecessor or its heading
    asked = "How many vents does the Beacon Shell have?"  # the helmet the vents belong to
    assert bench.named_signals(asked, passages) == (abstain.sentence_score(asked, passages), 1.0)
    assert bench.named_signals("How many vents are there?", passages)[1] == 1.0  # no names to miss
    assert bench.named_signals("How many vents does the Tidewalker 10 have?", passages)[0] == 0.0
    assert bench.named_signals(near_miss, []) == (0.0, 0.0)


def test_auc_gain_is_paired_and_its_interval_holds_the_gain():
    bench = _benchmark()
    pos, neg = [0.9, 0.8, 0.7, 0.6, 0.2], [0.5, 0.4, 0.3, 0.1]
    gain, lo, hi = bench.auc_gain(pos, neg, pos, neg)
    assert gain == lo == hi == 0.0  # a scorer against itself: every resample the same
    better = [p + 1.0 for p in pos]  # separates perfectly
    gain, lo, hi = bench.auc_gain(pos, neg, better, neg)
    assert gain == pytest.approx(1.0 - bench.roc_auc(pos, neg)) and lo <= gain <= hi and lo >= 0.0


def test_choose_threshold_answers_enough_and_declines_the_most():
    bench = _benchmark()
    pos = [0.9, 0.8, 0.7, 0.6, 0.5, 0.45, 0.4, 0.35, 0.3, 0.1]  # 10 answerable
    neg = [0.55, 0.33, 0.2, 0.05]
    # may refuse one answerable question (the 0.1): then 0.2 and 0.05 are declined; declining
    # 0.33 too would refuse 0.3 as well
    th = bench.choose_threshold(pos, neg, min_answered=0.9)
    assert th == pytest.approx((0.2 + 0.3) / 2)  # halfway between neighbours
    assert bench.rates(pos, neg, th) == (0.9, 0.5)
    assert bench.choose_threshold(pos, neg, min_answered=1.0) == pytest.approx((0.05 + 0.1) / 2)  # all answered
