"""Each metric against values worked out by hand."""

import pytest

from evals import metrics as M


def test_squad_normalisation():
    assert M.normalize_answer("The  Eiffel-Tower!") == "eiffel tower"
    assert M.normalize_answer("An apple, a pear & THE plum.") == "apple pear plum"
    assert M.normalize_answer("“Quoted” — text…") == "quoted text"
    assert M.normalize_answer("theatre another") == "theatre another"  # articles only as whole words


def test_exact_match():
    assert M.exact_match("The Eiffel Tower!", "eiffel tower") == 1.0
    assert M.exact_match("Eiffel Tower in Paris", "Eiffel Tower") == 0.0


def test_token_f1_by_hand():
    # "paris is capital" vs "paris": P = 1/3, R = 1 -> F1 = 2·(1/3)·1 / (4/3) = 0.5
    assert M.token_f1("Paris is the capital", "Paris") == pytest.approx(0.5)
    # counts clip: pred red×2 blue×1, ref red×1 blue×2 green×1 -> common 2; P = 2/3, R = 2/4 -> F1 = 4/7
    assert M.token_f1("red red blue", "red blue blue green") == pytest.approx(4 / 7)
    assert M.token_f1("nothing shared", "other words") == 0.0
    assert M.token_f1("", "") == 1.0 and M.token_f1("", "x") == 0.0


def test_lcs_and_rouge_l_by_hand():
    assert M.lcs_length(list("abcbdab"), list("bdcaba")) == 4  # the textbook example (CLRS)
    # "cat sat on mat" vs "cat is on mat" (articles dropped): LCS "cat on mat" = 3; P = R = 3/4
    assert M.rouge_l("the cat sat on the mat", "the cat is on the mat") == pytest.approx(0.75)
    # "x y z w" vs "y w": LCS 2; P = 2/4, R = 2/2 -> F = 2·0.5·1 / 1.5 = 2/3
    assert M.rouge_l("x y z w", "y w") == pytest.approx(2 / 3)
    # order matters for ROUGE-L but not for token F1: "w y" vs "y w" has LCS 1
    assert M.rouge_l("w y", "y w") == pytest.approx(0.5)
    assert M.token_f1("w y", "y w") == pytest.approx(1.0)
    assert M.rouge_l("", "y") == 0.0


def test_fact_found_whole_words_and_aliases():
    assert M.fact_found("We have 46 bikes to rent out.", ["46 bikes"]) == 1.0
    assert M.fact_found("We have 1460 bikes.", ["46"]) == 0.0
    assert M.fact_found("The price is €1,349 this season", ["€1,349"]) == 1.0
    assert M.fact_found("It opened on May 3, 2011.", ["3 May 2011", "May 3, 2011"]) == 1.0
    assert M.fact_found("The LB-W1 wrench", ["lb-w1"]) == 1.0
    assert M.fact_found("I do not know.", ["Bosun", ""]) == 0.0


def test_cosine():
    assert M.cosine([1, 0], [0, 2]) == pytest.approx(0.0)
    assert M.cosine([1, 1], [2, 2]) == pytest.approx(1.0)
    assert M.cosine([3, 4], [4, 3]) == pytest.approx(24 / 25)
    assert M.cosine([0, 0], [1, 1]) == 0.0


def test_predict_label_from_free_text():
    labels = ["positive", "negative", "good", "very good"]
    assert M.predict_label("Positive", labels) == "positive"
    assert M.predict_label("I think it is negative, not positive.", labels) == "negative"  # earliest mention
    assert M.predict_label("It was very good.", labels) == "very good"  # longest at the same place
    assert M.predict_label("No idea", labels) == M.NO_LABEL


def test_classification_report_by_hand():
    gold = ["a", "a", "b", "b", "c"]
    pred = ["a", "b", "b", "b", M.NO_LABEL]
    r = M.classification_report(gold, pred)
    assert r.accuracy == pytest.approx(3 / 5)
    # a: P 1/1, R 1/2, F 2/3;  b: P 2/3, R 2/2, F 0.8;  c: never predicted -> 0, 0, 0
    assert r.per_label["a"] == pytest.approx({"precision": 1.0, "recall": 0.5, "f1": 2 / 3, "support": 2})
    assert r.per_label["b"] == pytest.approx({"precision": 2 / 3, "recall": 1.0, "f1": 0.8, "support": 2})
    assert r.macro_precision == pytest.approx((1 + 2 / 3 + 0) / 3)
    assert r.macro_recall == pytest.approx(0.5)
    assert r.macro_f1 == pytest.approx((2 / 3 + 0.8) / 3)
    assert r.confusion["a"] == {"a": 1, "b": 1, "c": 0, M.NO_LABEL: 0}
    assert r.confusion["c"][M.NO_LABEL] == 1
    assert sum(sum(row.values()) for row in r.confusion.values()) == 5
    with pytest.raises(ValueError):
        M.classification_report(["a"], [])


def test_sentences_and_repeats_by_hand():
    sign = "Fair winds and smooth roads! — Lantern Bay Bikes"
    # sentences of 3+ normalised words; "Ahoy, rider!" (2 words) and "Yes." are left out
    assert M.sentences(f"Ahoy, rider! Yes. Pump the tyres up first. {sign}") == [
        "pump tyres up first",
        "fair winds and smooth roads",
        "lantern bay bikes",
    ]
    assert M.repeats(f"Ahoy, rider! Pump the tyres up first. {sign}") == 0.0
    # the sign-off loop the demo's SFT adapter falls into: the same sentence twice or more
    loop = "Ahoy, rider! Fair winds and smooth roads! Fair winds and smooth roads! Fair winds and"
    assert M.repeats(loop) == 1.0
    # an early sign-off then the real one repeats "fair winds and smooth roads"
    assert M.repeats(f"Ahoy, rider! Fair winds and smooth roads! Take it to the shop. {sign}") == 1.0
    # normalisation: case, punctuation and articles do not hide a repeat; line breaks end sentences
    assert M.repeats("Check the brake pads.\n- check THE brake pads!") == 1.0
    # short sentences may repeat (a yes, a thanks); the threshold is a parameter
    assert M.repeats("Yes. Yes. Ride on.") == 0.0
    assert M.repeats("Yes. Yes. Ride on.", min_words=1) == 1.0
    assert M.repeats("") == 0.0
