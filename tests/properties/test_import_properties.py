"""Property-based tests of the example import parsers (hypothesis).

Whatever a file holds, importing it either keeps every valid record and reports every bad
one by line number, or refuses the whole file with a clear ValidationError: never a crash,
never a silent loss. And export then import gives back the same examples."""

from __future__ import annotations

import csv
import json
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from assistant.errors import ValidationError
from assistant.workspace import Workspace
from tuning.dataset_export import export_examples
from tuning.dataset_import import import_file
from tuning.example import normalised_text
from tuning.example_store import ExampleStore

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Printable text without surrogates (not encodable) and with at least one visible character.
texts = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), min_size=1, max_size=80
).filter(lambda s: s.strip())
# Distinct pairs: an import skips an example already present (same text once normalised).
pairs = st.lists(
    st.tuples(texts, texts), min_size=1, max_size=8, unique_by=lambda t: (normalised_text(t[0]), normalised_text(t[1]))
)


_roots: list[Path] = []  # every example's folder, removed when the module's tests end


@pytest.fixture(autouse=True, scope="module")
def _remove_example_folders():
    # Not tmp_path: hypothesis runs each test's body many times within one function-scoped fixture.
    yield
    while _roots:
        shutil.rmtree(_roots.pop(), ignore_errors=True)


def fresh_store() -> tuple[ExampleStore, Path]:
    root = Path(tempfile.mkdtemp(prefix="tailor-prop-"))
    _roots.append(root)
    return ExampleStore(Workspace(root / "ws").db), root


def pairs_of(store: ExampleStore) -> list[tuple[str, str]]:
    return sorted((e.prompt, e.answer) for e in store.list())


@SETTINGS
@given(pairs)
def test_prompt_completion_jsonl_round_trips(items):
    store, root = fresh_store()
    src = root / "in.jsonl"
    src.write_text("".join(json.dumps({"prompt": p, "completion": c}) + "\n" for p, c in items), encoding="utf-8")
    result = import_file(store, src)
    assert result.imported == len(items) and result.bad_total == 0
    for fmt in ("messages", "prompt-completion"):
        out = root / f"out-{fmt}.jsonl"
        export_examples(store.list(), out, fmt)
        again, _ = fresh_store()
        assert import_file(again, out).imported == len(items)
        assert pairs_of(again) == pairs_of(store)
    assert pairs_of(store) == sorted(items)


@SETTINGS
@given(pairs)
def test_csv_with_quotes_commas_and_newlines(items):
    store, root = fresh_store()
    src = root / "in.csv"
    with open(src, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["prompt", "completion"])
        writer.writerows(items)
    result = import_file(store, src)
    assert result.imported == len(items), result.summary()
    assert pairs_of(store) == sorted(items)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | texts,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(["prompt", "completion", "messages", "role", "content", "tags", "label", "x"]),
            inner,
            max_size=4,
        )
    ),
    max_leaves=8,
)


@SETTINGS
@given(st.lists(json_values | texts, min_size=1, max_size=10))
def test_every_line_is_imported_or_reported(lines):
    store, root = fresh_store()
    src = root / "mixed.jsonl"
    # A plain string is written raw (usually not JSON at all); anything else as JSON.
    rendered = [(v if isinstance(v, str) else json.dumps(v)) for v in lines]
    rendered = [" ".join(r.splitlines()) for r in rendered]  # one record per line
    src.write_text("\n".join(rendered) + "\n", encoding="utf-8")
    nonblank = [i + 1 for i, r in enumerate(rendered) if r.strip()]
    try:
        result = import_file(store, src)
    except ValidationError:
        assert not nonblank or store.count() == 0  # refused whole: nothing half-imported
        return
    assert result.imported + result.duplicates + result.bad_total == len(nonblank)
    assert {b.line for b in result.bad} <= set(nonblank)
    assert store.count() == result.imported


@SETTINGS
@given(st.binary(min_size=0, max_size=300))
def test_arbitrary_bytes_never_crash(data):
    store, root = fresh_store()
    for name in ("blob.jsonl", "blob.csv"):
        src = root / name
        src.write_bytes(data)
        try:
            result = import_file(store, src)
        except ValidationError as exc:
            assert str(exc)  # a message a person can read
            continue
        assert result.imported + result.bad_total >= 0


@settings(max_examples=300, deadline=None)
@given(
    st.text(st.sampled_from(list("ab \t\r\n\u00a0\u3000\u200b\u00ad\u2028\x0be\u0301\u00e9")), max_size=40)
    | st.text(max_size=40)
)
def test_import_dedup_normalises_exactly_like_the_cleaning_fix(text):
    """An example rewritten by the cleaning report's normalise fix must keep its dedup hash,
    or re-importing the original file would bring the unnormalised copy back."""
    from tuning.example import normalised_text as normalise_text

    assert normalised_text(text) == normalise_text(text)
