"""`tailor docs add|list|show|remove|check` and `tailor search`, through the real entry point."""

import json

from cli.main import main


def _run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_docs_commands_end_to_end(tmp_path, docs_dir, capsys, embedder):
    ws = ["--workspace", str(tmp_path / "ws")]
    (docs_dir / "notes.docx").write_bytes(b"PK")
    code, out, _ = _run(capsys, "docs", "add", str(docs_dir), *ws, "--json")
    results = {r["name"]: r for r in json.loads(out)}
    assert code == 1  # one file failed ...
    assert results["notes.docx"]["status"] == "error"
    assert sum(r["status"] == "added" for r in results.values()) == 4  # ... the others went in

    code, out, _ = _run(capsys, "docs", "add", str(docs_dir / "fares.html"), *ws)
    assert code == 0 and out.startswith("unchanged")

    code, out, _ = _run(capsys, "docs", "list", "--json", *ws)
    listed = json.loads(out)
    assert code == 0 and {d["name"] for d in listed} == {"timetable.md", "fares.html", "lost_property.txt", "rules.pdf"}
    assert all(d["chunk_count"] >= 1 and d["size_bytes"] > 0 for d in listed)

    code, out, _ = _run(capsys, "search", "how much is a car single ticket", "--k", "2", "--json", *ws)
    hits = json.loads(out)
    assert code == 0 and len(hits) == 2 and hits[0]["source"] == "fares.html"
    assert set(hits[0]["scores"]) >= {"dense", "bm25", "fused"}

    code, out, _ = _run(capsys, "search", "how much is a car single ticket", *ws)
    assert "fares.html" in out and "dense" in out and "bm25" in out and "fused" in out

    code, out, _ = _run(capsys, "docs", "show", "fares.html", *ws)
    assert code == 0 and "Vehicle: Car; Single: 38 euro" in out

    code, out, _ = _run(capsys, "docs", "check", *ws)
    assert code == 0 and out.startswith("index ok")

    code, out, _ = _run(capsys, "docs", "remove", "fares.html", *ws)
    assert code == 0 and "removed fares.html" in out

    code, _, err = _run(capsys, "docs", "remove", "fares.html", *ws)
    assert code == 2 and "no document named 'fares.html'" in err and "Traceback" not in err
