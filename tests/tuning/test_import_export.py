"""Import (format detection, bad lines, encodings, empty files, 100,000 lines with
progress) and export in every format, with round trips."""

import codecs
import json
from pathlib import Path

import pytest

from assistant.errors import ValidationError
from tuning.dataset_export import export_examples
from tuning.dataset_import import import_file
from tuning.example import chat_example
from tuning.example_table import ExampleFilter

REPO = Path(__file__).resolve().parents[2]


def _write(path: Path, lines, encoding="utf-8") -> Path:
    path.write_bytes("".join(line + "\n" for line in lines).encode(encoding))
    return path


def test_good_and_bad_lines(cur_store, tmp_path):
    f = _write(
        tmp_path / "mixed.jsonl",
        [
            json.dumps({"prompt": "What is a derailleur?", "completion": "It moves the chain.", "tags": ["parts"]}),
            '{"prompt": "broken json", ',
            json.dumps(
                {
                    "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Ahoy!"}],
                    "label": "greeting",
                }
            ),
            "",
            json.dumps({"prompt": "no completion"}),
            json.dumps({"messages": [{"role": "user", "content": "only a question"}]}),
            json.dumps(["not", "an", "object"]),
            json.dumps({"title": "unknown shape"}),
            json.dumps({"prompt": "   ", "completion": "blank prompt"}),
            json.dumps({"question": "When?", "answer": "At 10.", "passages": [{"source": "hours.md", "text": "10-4"}]}),
        ],
    )
    result = import_file(cur_store, f)
    assert result.imported == 3
    assert result.formats == {"prompt-completion": 1, "messages": 1, "grounding": 1}
    bad = {b.line: b.reason for b in result.bad}
    assert sorted(bad) == [2, 5, 6, 7, 8, 9]
    assert "not valid JSON" in bad[2]
    assert "needs both 'prompt' and 'completion'" in bad[5]
    assert "end with a user message" in bad[6]
    assert "expected a JSON object" in bad[7]
    assert "unknown record shape" in bad[8] and "title" in bad[8]
    assert "'prompt' is empty" in bad[9]
    assert "line 2:" in result.summary()
    stored = cur_store.list()
    assert [e.answer for e in stored] == ["It moves the chain.", "Ahoy!", "At 10."]
    assert stored[0].tags == ["parts"] and stored[1].label == "greeting"
    assert stored[2].passages == [{"source": "hours.md", "text": "10-4", "id": 1}]
    assert all(e.source == "import" and e.split for e in stored)


def test_demo_dataset_imports(cur_store):
    pairs = import_file(cur_store, REPO / "demo/lantern_bay/pairs.jsonl")
    grounding = import_file(cur_store, REPO / "demo/lantern_bay/grounding.jsonl")
    assert pairs.imported > 100 and pairs.bad_total == 0 and pairs.formats == {"prompt-completion": pairs.imported}
    assert grounding.imported > 20 and grounding.bad_total == 0
    grounded = cur_store.list(ExampleFilter(ids=grounding.ids))
    assert all(e.passages and e.passages[0]["text"] for e in grounded)


def test_csv_import(cur_store, tmp_path):
    f = tmp_path / "pairs.csv"
    f.write_text(
        'prompt,completion,label\n"Hi, there","Ahoy, rider!",greeting\n"",empty prompt,\n'
        '"Multi\nline",ok,\nonly,two,three,four\n',
        encoding="utf-8",
    )
    result = import_file(cur_store, f)
    assert result.imported == 2
    assert [b.line for b in result.bad] == [3, 6]
    ex = cur_store.list()
    assert ex[0].prompt == "Hi, there" and ex[0].label == "greeting" and ex[1].prompt == "Multi\nline"
    (tmp_path / "cols.csv").write_text("question_text,reply\na,b\n", encoding="utf-8")
    with pytest.raises(ValidationError, match="needs 'prompt' and 'completion' columns"):
        import_file(cur_store, tmp_path / "cols.csv")


def test_encodings_and_empty_files(cur_store, tmp_path):
    line = json.dumps({"prompt": "Café?", "completion": "Oui — €3.10"}, ensure_ascii=False)
    f = tmp_path / "bom.jsonl"
    f.write_bytes(codecs.BOM_UTF8 + (line + "\n").encode("utf-8"))
    assert import_file(cur_store, f).imported == 1
    f16 = tmp_path / "utf16.jsonl"
    line2 = json.dumps({"prompt": "Crème?", "completion": "Non — €4.20"}, ensure_ascii=False)
    f16.write_bytes((line + "\n" + line2 + "\n").encode("utf-16"))
    r = import_file(cur_store, f16)
    assert r.imported == 1 and r.duplicates == 1 and r.encoding == "utf-16"  # the Café line is already in
    assert cur_store.list()[-1].prompt == "Crème?"

    latin = tmp_path / "latin1.jsonl"
    good = json.dumps({"prompt": "a", "completion": "b"}) + "\n"
    latin_line = json.dumps({"prompt": "Café?", "completion": "Oui"}, ensure_ascii=False)
    latin.write_bytes(good.encode() + (latin_line + "\n").encode("latin-1"))
    with pytest.raises(ValidationError) as err:
        import_file(cur_store, latin)
    msg = str(err.value)
    assert "latin1.jsonl" in msg and "not valid UTF-8" in msg
    offset = len(good.encode()) + latin_line.encode("latin-1").index("é".encode("latin-1"))
    assert f"byte offset {offset}" in msg and "line 2" in msg
    assert cur_store.count() == 2  # nothing from the badly encoded file

    (tmp_path / "empty.jsonl").write_bytes(b"")
    with pytest.raises(ValidationError, match="empty.jsonl is empty"):
        import_file(cur_store, tmp_path / "empty.jsonl")
    (tmp_path / "blank.jsonl").write_text("\n  \n\n")
    with pytest.raises(ValidationError, match="no records"):
        import_file(cur_store, tmp_path / "blank.jsonl")
    with pytest.raises(ValidationError, match="does not exist"):
        import_file(cur_store, tmp_path / "missing.jsonl")


def test_hundred_thousand_lines_in_batches_with_progress(cur_store, tmp_path):
    f = tmp_path / "big.jsonl"
    with open(f, "w") as fh:
        for i in range(100_000):
            fh.write(json.dumps({"prompt": f"Question {i}?", "completion": f"Answer {i}."}) + "\n")
            if i == 54_321:
                fh.write("oops\n")
    calls = []
    result = import_file(cur_store, f, batch_size=5000, progress=lambda done, total: calls.append((done, total)))
    assert result.imported == 100_000 and [b.line for b in result.bad] == [54_323]
    assert cur_store.count() == 100_000
    # One progress call per committed batch (20) plus the final one; monotonic, ends at 100%.
    assert len(calls) >= 21 and calls[-1][0] == calls[-1][1] == f.stat().st_size
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)
    counts = cur_store.counts_by_split()
    assert counts == {"train": 80_000, "validation": 10_000, "test": 10_000}


def _same(a, b):
    key = lambda e: (e.messages, e.label, e.tags, [(p["source"], p["text"]) for p in e.passages or []])  # noqa: E731
    return [key(e) for e in a] == [key(e) for e in b]


@pytest.mark.parametrize(
    "fmt,name", [("messages", "out.jsonl"), ("prompt-completion", "out.jsonl"), ("hf", "out_hf"), ("hf", "out.parquet")]
)
def test_export_then_import_round_trip(cur_curation, workspace, tmp_path, fmt, name):
    from assistant.workspace import Workspace
    from tuning import open_curation

    store = cur_curation.store
    store.add(chat_example("Single turn?", "Yes.", label="a", tags=["t1", "t2"]))
    store.add(chat_example("With a system prompt?", "Yes, kept.", system="Be a pirate."))
    store.add(
        chat_example(
            "Grounded?", "From the source.", passages=[{"source": "doc.md", "text": "The source says so.", "id": 3}]
        )
    )
    from tuning.example import make_example

    store.add(
        make_example(
            [
                {"role": "system", "content": "sys"},
                {"role": "user", "content": "first"},
                {"role": "assistant", "content": "one"},
                {"role": "user", "content": "second"},
                {"role": "assistant", "content": "two"},
            ],
            tags=["multi"],
        )
    )
    original = store.list()
    dest = export_examples(original, tmp_path / name, fmt)
    other = open_curation(Workspace(tmp_path / "other-ws")).store
    result = import_file(other, dest)
    assert result.bad_total == 0 and result.imported == len(original)
    back = other.list()
    if fmt == "hf" and not name.endswith(".parquet"):  # grouped by split on export
        order = {e.id: i for i, e in enumerate(original)}
        by_text = {(e.prompt, e.answer): e for e in original}
        back_sorted = sorted(back, key=lambda e: order[by_text[(e.prompt, e.answer)].id])
        assert _same(original, back_sorted)
        assert (dest / "dataset").is_dir() and any(dest.glob("*.parquet"))
    else:
        assert _same(original, back)


def test_rendered_export_inlines_passages(cur_store, tmp_path):
    cur_store.add(chat_example("Grounded?", "From the source.", passages=[{"source": "doc.md", "text": "It says."}]))
    dest = export_examples(cur_store.list(), tmp_path / "r.jsonl", "messages", rendered=True)
    rec = json.loads(dest.read_text())
    assert "passages" not in rec and "It says." in rec["messages"][0]["content"]
    with pytest.raises(ValidationError, match="unknown export format"):
        export_examples(cur_store.list(), tmp_path / "x", "xml")
