"""Splits: reproducible, configurable, stratified by label, and stable as the dataset grows."""

import pytest

from assistant.errors import ValidationError
from tuning.example import chat_example
from tuning.example_table import ExampleFilter
from tuning.splits import SplitConfig, assign_splits, parse_ratios, reassign_all, set_config


def _add(store, n, label=None, start=0):
    return store.add_many([chat_example(f"q{start + i}", f"a{start + i}", label=label) for i in range(n)])


def _splits(store):
    return {e.id: e.split for e in store.list()}


def test_test_split_never_changes_as_examples_are_added(cur_store):
    _add(cur_store, 200)
    before = _splits(cur_store)
    test_before = {i for i, s in before.items() if s == "test"}
    assert len(test_before) == 20
    for round_ in range(5):  # grow in uneven steps, with labels appearing later
        _add(cur_store, 37 + round_ * 11, label="late" if round_ % 2 else None, start=1000 * (round_ + 1))
        now = _splits(cur_store)
        assert {i: now[i] for i in before} == before  # every earlier example kept its split
    counts = cur_store.counts_by_split()
    total = sum(counts[s] for s in ("train", "validation", "test"))
    assert abs(counts["test"] - 0.1 * total) <= 2 and abs(counts["validation"] - 0.1 * total) <= 2


def test_reproducible_from_the_same_data(cur_store, workspace, tmp_path):
    from assistant.workspace import Workspace
    from tuning import open_curation

    _add(cur_store, 150)
    other = open_curation(Workspace(tmp_path / "again")).store
    _add(other, 150)
    assert _splits(cur_store) == _splits(other)


def test_stratified_by_label_even_for_small_labels(cur_store):
    _add(cur_store, 10, label="rare")
    _add(cur_store, 90, label="common", start=100)
    _add(cur_store, 40, start=500)  # unlabelled
    for label, n in (("rare", 10), ("common", 90)):
        got = [e.split for e in cur_store.list(ExampleFilter(label=label))]
        assert got.count("test") == round(n * 0.1) and got.count("validation") == round(n * 0.1), label
    ids = cur_store.add_many([chat_example("one more rare", "x", label="rare")])
    assert cur_store.get(ids[0]).split == "train"  # 11 rare: targets 8.8/1.1/1.1, train is most behind


def test_configurable_ratios_and_reassign(cur_store):
    assert parse_ratios("70,20,10") == pytest.approx((0.7, 0.2, 0.1))
    with pytest.raises(ValidationError):
        parse_ratios("50,50")
    with pytest.raises(ValidationError):
        parse_ratios("a,b,c")
    set_config(cur_store, SplitConfig((60, 20, 20)))
    _add(cur_store, 100)
    assert cur_store.counts_by_split() == {"train": 60, "validation": 20, "test": 20}
    reassign_all(cur_store, SplitConfig((50, 0, 50)))
    assert cur_store.counts_by_split() == {"train": 50, "validation": 0, "test": 50}
    assert assign_splits(cur_store) == {"train": 0, "validation": 0, "test": 0}  # nothing left to assign
