"""`tailor examples ...` as a real subprocess: import with bad lines, list, clean + undo,
split, snapshot, versions, diff, export."""

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def tailor(*args):
    return subprocess.run(
        [sys.executable, "-m", "cli.main", "examples", *map(str, args)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )


def test_examples_commands(tmp_path):
    ws = ("--workspace", tmp_path / "ws")
    f = tmp_path / "in.jsonl"
    f.write_text(
        "\n".join(
            [
                json.dumps({"prompt": "Where are you?", "completion": "On the quay."}),
                "{bad json",
                json.dumps({"prompt": "Where are you?", "completion": "On the quay."}),
                json.dumps({"prompt": "Email?", "completion": "Write to shop@lanternbay.example"}),
            ]
        )
        + "\n"
    )
    r = tailor("import", f, "--tags", "cli", *ws)
    assert r.returncode == 0, r.stderr
    assert "Imported 2 examples" in r.stdout and "1 already present" in r.stdout  # line 3 repeats line 1
    assert f"{f}:2: not valid JSON" in r.stderr and "tailor examples undo import-1" in r.stdout
    r = tailor("import", f, *ws)  # the same file again adds nothing
    assert "Imported 0 examples" in r.stdout and "3 already present" in r.stdout, r.stdout
    # An exact duplicate can still come from elsewhere (a reply saved from the chat twice, ...).
    from assistant.workspace import Workspace
    from tuning import open_curation
    from tuning.example import chat_example

    open_curation(Workspace(ws[1])).store.add(
        chat_example("Where are you?", "On the quay.", tags=["cli"], source="chat")
    )

    r = tailor("list", "--json", *ws)
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(rows) == 3 and all(row["tags"] == ["cli"] for row in rows)

    r = tailor("clean", "--json", "--only", "duplicate,pii", *ws)
    report = json.loads(r.stdout)
    assert report["counts"]["duplicate"] == 1 and report["counts"]["pii"] == 1 and "fixed" not in report
    r = tailor("clean", "--apply", "--only", "duplicate,pii", *ws)
    assert "Deleted 1" in r.stdout and "rewrote 1" in r.stdout, r.stdout + r.stderr
    assert len(tailor("list", "--json", *ws).stdout.splitlines()) == 2
    r = tailor("undo", *ws)
    assert r.returncode == 0 and "Restored 2" in r.stdout
    assert "shop@lanternbay.example" in tailor("list", "--json", "--query", "Email", *ws).stdout

    r = tailor("split", "--ratios", "50,25,25", "--json", *ws)
    assert json.loads(r.stdout)["ratios"] == [0.5, 0.25, 0.25]
    v1 = json.loads(tailor("snapshot", "--note", "one", "--json", *ws).stdout)
    assert v1["id"] == 1 and v1["new"] is True and sum(v1["counts"].values()) == 3
    assert json.loads(tailor("snapshot", "--json", *ws).stdout)["new"] is False
    f2 = tmp_path / "more.jsonl"
    f2.write_text("".join(json.dumps({"prompt": f"More {i}?", "completion": "Yes."}) + "\n" for i in range(3)))
    tailor("import", f2, *ws)
    assert json.loads(tailor("snapshot", "--json", *ws).stdout)["id"] == 2
    diff = json.loads(tailor("diff", "1", "2", *ws).stdout)
    assert len(diff["added"]) == 3 and diff["removed"] == [] and diff["changed"] == []
    assert "v2" in tailor("versions", *ws).stdout

    out = tmp_path / "hf"
    r = tailor("export", out, "--format", "hf", "--version", "1", *ws)
    assert r.returncode == 0 and "Exported 3 examples" in r.stdout and (out / "dataset").is_dir()

    r = tailor("import", tmp_path / "missing.jsonl", *ws)
    assert r.returncode == 2 and r.stderr.startswith("tailor: error:") and "does not exist" in r.stderr
    r = tailor("split", "--ratios", "1,2", *ws)
    assert r.returncode == 2 and "three split ratios" in r.stderr


def test_import_lists_a_deeply_nested_line_as_bad(tmp_path):
    f = tmp_path / "nested.jsonl"
    f.write_text(json.dumps({"prompt": "Fine?", "completion": "Fine."}) + "\n" + "[" * 50_000 + "]" * 50_000 + "\n")
    r = tailor("import", f, "--workspace", tmp_path / "ws")
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr and f"{f}:2: nested too deeply" in r.stderr
    assert "Imported 1 examples" in r.stdout and "1 bad line(s) skipped." in r.stdout
    listed = tailor("undo", "--list", "--workspace", tmp_path / "ws")
    assert listed.stdout.startswith("import-1  import nested.jsonl (#1)  (1 examples)"), listed.stdout


def test_search_treats_percent_and_underscore_as_themselves(tmp_path):
    """Issue #12.9: `%` and `_` were LIKE wildcards, so "50%" found "500" and "a_b" found "axb"."""
    f = tmp_path / "pairs.jsonl"
    rows = [("What discount?", "50% off"), ("How many?", "500 bikes"), ("Code?", "a_b"), ("Other code?", "axb")]
    f.write_text("".join(json.dumps({"prompt": p, "completion": c}) + "\n" for p, c in rows))
    assert tailor("import", f, "--workspace", tmp_path / "ws").returncode == 0

    def found(query):
        r = tailor("list", "--json", "--query", query, "--workspace", tmp_path / "ws")
        assert r.returncode == 0, r.stderr
        return sorted(json.loads(line)["messages"][-1]["content"] for line in r.stdout.splitlines() if line.strip())

    assert found("50%") == ["50% off"]
    assert found("a_b") == ["a_b"]
