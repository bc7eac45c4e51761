"""Loading evaluation sets: facts, uploaded reference files, dataset-version test splits."""

import json
from pathlib import Path

import pytest

from assistant.errors import NotFoundError, ValidationError
from evals.sets import latest_version_dir, load_facts, load_reference_file, load_test_split, subsample

REPO = Path(__file__).resolve().parents[2]


def write(path, lines):
    path.write_text(
        "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines), encoding="utf-8"
    )
    return path


def test_demo_facts_set_loads():
    s = load_facts(REPO / "demo" / "lantern_bay" / "facts.jsonl")
    assert s.kind == "facts" and len(s.items) >= 60 and not s.skipped
    first = s.items[0]
    assert first.messages == [{"role": "user", "content": first.question}]
    assert first.reference == first.answers[0]
    assert len({i.id for i in s.items}) == len(s.items)


def test_facts_bad_lines_are_reported_and_good_kept(tmp_path):
    path = write(
        tmp_path / "f.jsonl",
        [
            {"id": "a", "question": "Q1?", "answer": "A1", "aliases": ["one"]},
            "{not json",
            {"id": "b", "question": "", "answer": "x"},
            {"id": "c", "question": "Q3?", "answer": "A3", "aliases": "oops"},
            "",
            {"question": "Q5?", "answer": "A5"},
        ],
    )
    s = load_facts(path)
    assert [i.id for i in s.items] == ["a", "line-6"]
    assert s.items[0].answers == ["A1", "one"]
    assert [x.split(":")[0] for x in s.skipped] == ["line 2", "line 3", "line 4"]


def test_reference_file_formats(tmp_path):
    path = write(
        tmp_path / "ref.jsonl",
        [
            {"prompt": "Hi?", "completion": "Ahoy!", "label": "greeting"},
            {
                "messages": [
                    {"role": "system", "content": "Be kind."},
                    {"role": "user", "content": "Q?"},
                    {"role": "assistant", "content": "A."},
                ],
                "id": "m1",
            },
            {"question": "Dog?", "answer": "Bosun", "aliases": ["the dog"]},
            {"messages": [{"role": "user", "content": "no answer"}]},
            {"prompt": "p", "completion": "  "},
        ],
    )
    s = load_reference_file(path)
    assert len(s.items) == 3 and len(s.skipped) == 2
    a, b, c = s.items
    assert a.messages == [{"role": "user", "content": "Hi?"}] and a.reference == "Ahoy!" and a.label == "greeting"
    assert b.id == "m1" and b.system_prompt == "Be kind." and b.question == "Q?" and b.history == []
    assert c.answers == ["Bosun", "the dog"]


def test_test_split_from_a_version_folder(tmp_path):
    v = tmp_path / "datasets" / "v3"
    v.mkdir(parents=True)
    write(
        v / "test.jsonl",
        [
            {
                "example_id": 7,
                "messages": [
                    {"role": "user", "content": "one"},
                    {"role": "assistant", "content": "1"},
                    {"role": "user", "content": "two"},
                    {"role": "assistant", "content": "2"},
                ],
                "label": None,
            },
            {
                "example_id": 9,
                "messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}],
                "label": "pos",
            },
        ],
    )
    (tmp_path / "datasets" / "v2").mkdir()
    write(tmp_path / "datasets" / "v2" / "test.jsonl", [{"example_id": 1, "messages": []}])
    assert latest_version_dir(tmp_path / "datasets") == v
    s = load_test_split(v, "3")
    assert s.kind == "test" and s.dataset_version == "3"
    first = s.items[0]
    assert first.id == "7" and first.question == "two" and first.reference == "2"
    assert first.history == [{"role": "user", "content": "one"}, {"role": "assistant", "content": "1"}]
    assert s.items[1].label == "pos"
    with pytest.raises(NotFoundError):
        load_test_split(tmp_path / "datasets" / "v9")
    with pytest.raises(ValidationError, match="no usable items"):
        load_test_split(tmp_path / "datasets" / "v2")


def test_clear_errors_for_bad_files(tmp_path):
    with pytest.raises(NotFoundError):
        load_facts(tmp_path / "missing.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(ValidationError, match="empty"):
        load_reference_file(tmp_path / "empty.jsonl")
    (tmp_path / "latin1.jsonl").write_bytes('{"prompt": "caf\xe9"}'.encode("latin-1"))
    with pytest.raises(ValidationError, match="UTF-8"):
        load_reference_file(tmp_path / "latin1.jsonl")
    dup = write(tmp_path / "dup.jsonl", [{"id": "x", "question": "a", "answer": "b"}] * 2)
    with pytest.raises(ValidationError, match="twice"):
        load_facts(dup)


def test_subsample_is_reproducible():
    s = load_facts(REPO / "demo" / "lantern_bay" / "facts.jsonl")
    a, b = subsample(s, 10, seed=1), subsample(s, 10, seed=1)
    assert [i.id for i in a.items] == [i.id for i in b.items] and len(a.items) == 10
    assert a.fingerprint == b.fingerprint != s.fingerprint
    assert subsample(s, None) is s


def test_grounded_test_lines_are_split_back_into_the_question(tmp_path):
    from assistant.prompting import Passage, build_messages

    v = tmp_path / "v1"
    v.mkdir()
    rendered = build_messages(
        [], "Until when is breakfast served?", "Be kind.", [Passage(id=1, source="Menu", text="Breakfast until 11:30.")]
    )
    write(
        v / "test.jsonl",
        [{"example_id": 1, "label": None, "messages": rendered + [{"role": "assistant", "content": "Until 11:30."}]}],
    )
    [item] = load_test_split(v).items
    assert item.question == "Until when is breakfast served?" and item.system_prompt == "Be kind."
    assert "Breakfast until 11:30." in item.passages[0]["text"]
    # the arm without retrieval now sees the bare question, as a user chatting without it would
    assert build_messages(item.history, item.question, item.system_prompt)[-1]["content"] == item.question
