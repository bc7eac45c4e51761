"""Grounding examples mixed into a tune (tuning/grounding_mix.py, tuning/questions.py): made
from the documents' chunks, well formed, never from the evaluation's questions, reproducible,
only in that tune's training data, and recorded on the adapter's card."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from assistant.errors import ValidationError
from tuning.config import TrainConfig
from tuning.example import chat_example, render_messages
from tuning.grounding_mix import (
    GROUNDING_FILE,
    TAG,
    Exclusions,
    GroundingOptions,
    Voice,
    as_doc_chunks,
    candidate_pool,
    compose_grounding,
    detect_voice,
)
from tuning.questions import candidates, contains_phrase, normalise, problems

DEMO = Path(__file__).resolve().parents[2] / "demo" / "lantern_bay"
OPENER, SIGNOFF = "Ahoy, rider!", "Fair winds and smooth roads! — Lantern Bay Bikes"

CHUNKS = [
    {
        "id": 1,
        "source": "catalogue.md",
        "heading": "Catalogue > Harbourmaster 7 (city bike)",
        "position": 1,
        "text": "A steady bike for the coast road.\n\n- Price: €512\n- Weight: 13.2 kg\n- Colour: Fog Blue",
    },
    {
        "id": 2,
        "source": "catalogue.md",
        "heading": "Catalogue > Tidewalker 8 (city bike)",
        "position": 2,
        "text": "Our everyday bike.\n\n- Price: €689\n- Weight: 14.6 kg\n- Colours: Harbour Teal and Chalk White",
    },
    {
        "id": 3,
        "source": "hours.md",
        "heading": "Opening Hours > Regular weekly hours",
        "position": 1,
        "text": "Day: Monday; Shop: 10:00–17:30; Workshop: Closed\nDay: Tuesday; Shop: 08:30–18:00; Workshop: 08:30–17:30",
    },
    {
        "id": 4,
        "source": "hours.md",
        "heading": "Opening Hours > Late Lantern Thursdays",
        "position": 2,
        "text": "Every Thursday we stay open until 20:00. A relaxed group ride leaves from the front door at 18:45.",
    },
    {
        "id": 5,
        "source": "about.md",
        "heading": "About > The crew",
        "position": 1,
        "text": "- Ines Halloran – rentals manager, keeper of the key cabinet.\n"
        "- Dario Lund-Vasquez – head mechanic since 2013.",
    },
    {
        "id": 6,
        "source": "rentals.md",
        "heading": "Rentals > Deposit",
        "position": 1,
        "text": "We take a deposit of €150 as a card pre-authorisation for each bike. Rentals are run by Ines Halloran.",
    },
    {
        "id": 7,
        "source": "fitting.md",
        "heading": "Fitting > Sessions",
        "position": 1,
        "text": "Our standard session lasts 75 minutes and costs €95. The shop was founded by Oriel Pentreath.",
    },
]


def _records(n: int = 24) -> list[dict]:
    tips = [
        "Pump your tyres before a ride.",
        "Oil the chain after rain.",
        "Check your brakes weekly.",
        "Carry a spare tube.",
        "Lights on after dusk.",
    ]
    return [
        {
            "messages": [
                {"role": "user", "content": f"Tip {i}?"},
                {"role": "assistant", "content": f"{OPENER} {tips[i % len(tips)]} {SIGNOFF}"},
            ]
        }
        for i in range(n)
    ]


def _mix(seed: int = 42, chunks=CHUNKS, **options):
    return compose_grounding(chunks, _records(), options=GroundingOptions(**{"ratio": 0.5, **options}), seed=seed)


# ---- questions ----------------------------------------------------------------------------------
def test_templates_make_questions_from_rows_items_and_sentences():
    made = {c.question: c.span for c in candidates(CHUNKS[1]["heading"], CHUNKS[1]["text"])}
    assert made["What is the price of the Tidewalker 8?"] == "€689"
    assert made["How much does the Tidewalker 8 cost?"] == "€689"
    assert made["What is the weight of the Tidewalker 8?"] == "14.6 kg"
    rows = {c.question: c.span for c in candidates(CHUNKS[2]["heading"], CHUNKS[2]["text"])}
    assert rows["What are the shop hours on Monday?"] == "10:00–17:30"
    said = {c.question: c.span for c in candidates(CHUNKS[3]["heading"], CHUNKS[3]["text"])}
    assert said["Until what time do you stay open every Thursday?"] == "20:00"
    assert said["What time does a relaxed group ride leave from the front door?"] == "18:45"
    crew = {c.question: c.span for c in candidates(CHUNKS[4]["heading"], CHUNKS[4]["text"])}
    assert crew["Who is the rentals manager?"] == "Ines Halloran"
    more = {c.question: (c.span, c.statement) for c in candidates(CHUNKS[6]["heading"], CHUNKS[6]["text"])}
    assert more["How long does your standard session last?"] == ("75 minutes", "Our standard session lasts 75 minutes.")
    assert more["How much does your standard session cost?"][0] == "€95"
    assert more["Who was the shop founded by?"][0] == "Oriel Pentreath"


def test_the_filter_drops_bad_questions():
    [bad] = [c for c in candidates("About", "Oriel bought it at a harbour auction in 2010.")]
    assert "pronoun without a referent" in problems(bad, "Oriel bought it at a harbour auction in 2010.")
    from tuning.questions import Candidate

    text = "- Price: €689"
    assert "question contains the answer" in problems(
        Candidate("Is the price €689?", "€689", "price", "The price is €689."), text
    )
    assert "span too long or short" in problems(
        Candidate("What is it like?", "a " * 20 + "€689", "attribute", "x"), text
    )
    assert "answer type does not fit the question" in problems(
        Candidate("How much is the Tidewalker 8?", "Fog Blue", "price", "Fog Blue."), "Fog Blue"
    )
    assert "span not verbatim in the chunk" in problems(
        Candidate("What is the price of the Tidewalker 8?", "€690", "price", "It is €690."), text
    )


def test_the_voice_is_the_common_opener_and_signoff():
    voice = detect_voice([r["messages"][-1]["content"] for r in _records()])
    assert (voice.opener, voice.signoff) == (OPENER, SIGNOFF)
    assert detect_voice(["Sure. Pump them.", "Yes, oil it.", "No idea, sorry.", "Try the shop."]) == detect_voice([])
    assert detect_voice([]).wrap("The Tidewalker 8 costs €689.") == "The Tidewalker 8 costs €689."


# ---- examples -----------------------------------------------------------------------------------
def test_examples_are_well_formed():
    mix = _mix()
    assert mix.examples and mix.summary["not_in_sources"] >= 1 and mix.summary["answerable"] >= 1
    by_id = {c["id"]: c for c in CHUNKS}
    for ex in mix.examples:
        meta, span = ex.provenance, ex.provenance["span"]
        assert TAG in ex.tags and ex.id is None and ex.source == "generated"
        assert ex.answer.startswith(OPENER) and ex.answer.endswith(SIGNOFF)
        assert 3 <= len(ex.passages) <= 4 if meta["in_sources"] else 2 <= len(ex.passages) <= 3
        assert all(set(p) >= {"source", "heading", "text"} for p in ex.passages)
        gold = by_id[meta["chunk"]["id"]]
        assert span in gold["text"]  # the answer span is verbatim in its chunk
        others = [p for p in ex.passages if p["text"] != gold["text"]]
        assert all(not contains_phrase(p["text"], span) for p in others)  # distractors lack the answer
        assert all((p["source"], p["heading"]) != (gold["source"], gold["heading"]) for p in others)
        shown = render_messages(ex)[-2]["content"]
        if meta["in_sources"]:
            assert ex.passages[meta["gold_position"]]["text"] == gold["text"]  # the chunk is among the passages
            assert len(others) == len(ex.passages) - 1 and span in ex.answer and span in shown
        else:
            assert len(others) == len(ex.passages)  # shown only with distractors
            assert span not in ex.answer and ("could not find" in ex.answer or "do not cover" in ex.answer)
        assert not contains_phrase(ex.prompt, span)


def test_excluded_questions_and_answers_never_appear():
    excluded_q = ["what is the price of the tidewalker 8", "Until what time do you stay open every Thursday?"]
    golds = ["€150", "Ines Halloran", "14.6 kg"]
    exclusions = Exclusions.of(questions=excluded_q, answers=golds)
    docs, voice = as_doc_chunks(CHUNKS), Voice(OPENER, SIGNOFF)
    everything = [p.candidate for p in candidate_pool(docs, voice)[0]]
    kept, stats = candidate_pool(docs, voice, exclusions)
    # without the list those questions and answers would be made ...
    assert {normalise(q) for q in excluded_q} <= {normalise(c.question) for c in everything}
    assert all(any(contains_phrase(c.statement, g) for c in everything) for g in golds)
    # ... with it, none of them is
    assert stats.excluded_questions >= 2 and stats.excluded_answers >= 3 and len(kept) < len(everything)
    mix = compose_grounding(CHUNKS, _records(), options=GroundingOptions(ratio=0.5), exclusions=exclusions)
    assert mix.examples
    for ex in [p.candidate for p in kept] + mix.examples:
        question, answer = (ex.question, ex.statement) if hasattr(ex, "statement") else (ex.prompt, ex.answer)
        assert not exclusions.excludes_question(question)
        assert normalise(question) not in {normalise(q) for q in excluded_q}
        assert not any(contains_phrase(answer, g) for g in golds)
    # the same content words in another order are the same question; a span inside a gold answer counts
    assert Exclusions.of(["The Tidewalker 8: what is the price?"]).excludes_question(
        "What is the price of the Tidewalker 8?"
    )
    assert Exclusions.of(answers=["3 May 2011"]).excludes_answer("The shop opened in 2011.", "2011")
    assert not Exclusions.of(answers=["12"]).excludes_answer("It has 120 seats.", "120")


def test_same_chunks_and_seed_give_the_same_examples():
    first = _mix(seed=7)
    shuffled = list(CHUNKS)
    random.Random(3).shuffle(shuffled)
    again = _mix(seed=7, chunks=shuffled)
    assert [render_messages(e) for e in first.examples] == [render_messages(e) for e in again.examples]
    assert first.summary["hash"] == again.summary["hash"] and first.summary["seed"] == 7
    other = _mix(seed=8)
    assert other.summary["hash"] != first.summary["hash"]
    assert [render_messages(e) for e in other.examples] != [render_messages(e) for e in first.examples]


def test_ratio_and_cap_decide_how_many():
    options = GroundingOptions(ratio=0.2)
    assert options.target(180) == 45 and GroundingOptions().target(180) == 32  # default 0.15
    assert GroundingOptions(ratio=0.5, max_examples=10).target(1000) == 10
    assert GroundingOptions(enabled=False).target(180) == 0
    with pytest.raises(ValidationError, match="ratio"):
        GroundingOptions(ratio=0.9).validate()
    mix = _mix(ratio=0.2)
    assert mix.summary["target"] == 6 and len(mix.examples) == 6 and mix.summary["not_in_sources"] == 2


def test_demo_documents_give_well_formed_questions_and_never_the_evaluation_facts():
    """On the demo's own documents (chunked as the knowledge base does, with the tokenizer-free
    count), with the demo's evaluation sets excluded."""
    from retrieval.chunking import chunk_document
    from retrieval.documents import parse_document

    chunks = []
    for path in sorted((DEMO / "docs").iterdir()):
        for c in chunk_document(parse_document(path.name, path.read_bytes())):
            chunks.append({"source": path.name, "heading": c.heading, "text": c.text, "position": c.position})
    made = [(c, cand) for c in as_doc_chunks(chunks) for cand in candidates(c.heading, c.text)]
    good = [cand for c, cand in made if not problems(cand, c.text)]
    assert len(made) >= 100 and len(good) / len(made) >= 0.9
    exclusions = Exclusions.from_files([DEMO / "facts.jsonl", DEMO / "unanswerable.jsonl"])
    records = [
        {"messages": [{"role": "user", "content": p["prompt"]}, {"role": "assistant", "content": p["completion"]}]}
        for p in map(json.loads, (DEMO / "pairs.jsonl").read_text(encoding="utf-8").splitlines())
    ]
    mix = compose_grounding(chunks, records, n_train=180, exclusions=exclusions)
    assert mix.summary["examples"] == 32 and mix.summary["not_in_sources"] == 8
    assert mix.summary["voice"]["opener"] == OPENER and mix.summary["voice"]["signoff"] == SIGNOFF
    facts = [json.loads(line) for line in (DEMO / "facts.jsonl").read_text(encoding="utf-8").splitlines()]
    unanswerable = [json.loads(line) for line in (DEMO / "unanswerable.jsonl").read_text(encoding="utf-8").splitlines()]
    asked = {normalise(r["question"]) for r in facts + unanswerable}
    golds = [a for f in facts for a in [f["answer"], *f.get("aliases", [])]]
    for ex in mix.examples:
        assert normalise(ex.prompt) not in asked
        assert not any(contains_phrase(ex.answer, g) for g in golds), ex.answer


# ---- the tune -----------------------------------------------------------------------------------
@pytest.fixture
def tune_service(workspace, cur_store, tiny_model_dir):
    from tuning.service import open_tuning

    cur_store.add_many([chat_example(r["messages"][0]["content"], r["messages"][1]["content"]) for r in _records(16)])
    return open_tuning(workspace, "tiny", tiny_model_dir, chunks=lambda: CHUNKS)


def test_toggle_off_or_no_documents_mixes_in_none(tune_service):
    version = tune_service.versions().snapshot()
    off = tune_service.grounding_mix(version, TrainConfig(), GroundingOptions(enabled=False))
    assert off.examples == [] and off.summary["enabled"] is False and "off" in off.message
    tune_service.chunks = lambda: []
    empty = tune_service.grounding_mix(version, TrainConfig(), GroundingOptions())
    assert empty.examples == [] and empty.summary["enabled"] is True and empty.summary["documents"] == 0
    assert "no documents" in empty.message and "tailor docs add" in empty.message
    tune_service.chunks = None  # a composer that passes no chunk source: the same
    assert "no documents" in tune_service.grounding_mix(version, TrainConfig()).message
    tune_service.chunks = lambda: CHUNKS
    on = tune_service.grounding_mix(version, TrainConfig(), GroundingOptions(ratio=0.3))
    assert on.examples and on.summary["train_examples"] == version.counts["train"]
    # a job queued with the toggle off has no grounding examples, and its summary says so
    job = tune_service.jobs.submit(
        base_model="tiny",
        base_model_path=tune_service.base_model_path,
        dataset_version=version.id,
        dataset_path=version.path,
        start=False,
        grounding=off,
    )
    assert not (job.job_dir / GROUNDING_FILE).exists() and job.grounding() == off.summary
    assert job.as_dict()["grounding"]["enabled"] is False


def test_the_tune_trains_on_them_and_the_card_records_them(tune_service, cur_store, monkeypatch):
    """What a queued tune hands its worker and what the worker trains on and records, without
    training: the job folder's files, the worker's reading of them, the trainer's rows, the
    card's summary. (One real tune with grounding examples, run to its adapter card, is in
    tests/tuning/test_jobs_lifecycle.py.)"""
    from tuning.grounding_mix import GROUNDING_SUMMARY, card_summary
    from tuning.trainer import read_split, training_rows
    from tuning.worker import grounding_inputs

    monkeypatch.setattr(tune_service.jobs, "pump", lambda: None)  # queued, never started
    before = cur_store.count()
    job = tune_service.start(
        config=TrainConfig(threads=1, batch_size=4, max_length=512, max_steps=2, early_stopping_patience=0),
        grounding=GroundingOptions(ratio=0.3, seed=5),
        exclude=Exclusions.of(answers=["€150"]),
    )
    assert tune_service.jobs.get(job.id).status == "queued"
    summary = job.grounding()
    assert summary and summary["examples"] >= 3 and summary["seed"] == 5 and summary["ratio"] == 0.3
    assert job.as_dict()["grounding"] == summary
    lines = [json.loads(line) for line in (job.job_dir / GROUNDING_FILE).read_text(encoding="utf-8").splitlines()]
    assert len(lines) == summary["examples"] and all(TAG in line["tags"] for line in lines)
    assert all("€150" not in line["messages"][-1]["content"] for line in lines)
    # the worker reads the job folder's files, and the trainer adds the examples to the train split
    read, extra = grounding_inputs(job.job_dir)
    assert read == summary and extra == [job.job_dir / GROUNDING_FILE]
    version = tune_service.versions().get(int(job.dataset_version))
    own = read_split(version.path, "train")
    rows = training_rows(Path(job.dataset_path), extra)
    assert len(own) == version.counts["train"] and len(rows) == len(own) + summary["examples"]
    assert rows[: len(own)] == own
    assert rows[len(own) :] == [
        {"prompt": line["messages"][:-1], "completion": [line["messages"][-1]]} for line in lines
    ]
    # the card records the mix (what the worker passes to the registry)
    card = card_summary(read)
    assert card["examples"] == summary["examples"] and card["not_in_sources"] == summary["not_in_sources"]
    assert card["ratio"] == 0.3 and card["seed"] == 5 and card["hash"] == summary["hash"]
    # only this tune's training data: not saved as examples, not in any split of the version
    assert cur_store.count() == before
    assert not any(TAG in r["tags"] for s in ("train", "validation", "test") for r in version.records(s))
    # a job whose examples file is gone fails rather than training without them
    (job.job_dir / GROUNDING_FILE).unlink()
    with pytest.raises(FileNotFoundError, match="grounding examples"):
        grounding_inputs(job.job_dir)
    (job.job_dir / GROUNDING_SUMMARY).unlink()
    assert grounding_inputs(job.job_dir) == (None, [])


def test_cli_flags_and_the_demo_exclusion_list(workspace):
    from cli.main import build_parser
    from cli.tune_cmds import grounding_options
    from demo import demo_eval_sets, demo_exclusions

    args = build_parser().parse_args(["tune", "--grounding-ratio", "0.2", "--grounding-seed", "3"])
    assert grounding_options(args) == GroundingOptions(enabled=True, ratio=0.2, seed=3)
    assert grounding_options(build_parser().parse_args(["tune", "--no-grounding"])).enabled is False
    with pytest.raises(ValidationError, match="ratio"):
        grounding_options(build_parser().parse_args(["tune", "--grounding-ratio", "0.8"]))
    assert [p.name for p in demo_eval_sets()] == ["facts.jsonl", "unanswerable.jsonl"]
    assert demo_exclusions(workspace) is None  # the demo's documents are not loaded here
    demo = Exclusions.from_files(demo_eval_sets())
    assert demo.summary()["questions"] >= 140 and demo.excludes_question("How much is the Tidewalker 8?")


def test_a_demo_workspace_tunes_without_the_demo_facts(workspace, cur_store, tiny_model_dir):
    """The composition the CLI and the app use: chunks straight from the knowledge store's rows,
    the demo's evaluation sets excluded once its documents are in the knowledge base."""
    import hashlib

    import numpy as np

    from demo import demo_exclusions
    from retrieval.chunking import chunk_document
    from retrieval.documents import parse_document
    from retrieval.store import KnowledgeStore
    from tuning.service import open_tuning

    store = KnowledgeStore(workspace.db)
    for name in ("rentals.md", "catalogue_bikes.md", "opening_hours.md"):
        data = (DEMO / "docs" / name).read_bytes()
        doc = parse_document(name, data)
        chunks = chunk_document(doc)
        store.put_document(
            name=name, title=doc.title, kind=doc.kind, size_bytes=len(data), sha256=hashlib.sha256(data).hexdigest(),
            text=doc.text, chunks=chunks, vectors=np.zeros((len(chunks), 4), np.float32), model="test",
        )  # fmt: skip
    exclusions = demo_exclusions(workspace)
    assert exclusions is not None and exclusions.excludes_question("How much is the Tidewalker 8?")
    cur_store.add_many([chat_example(r["messages"][0]["content"], r["messages"][1]["content"]) for r in _records(40)])
    service = open_tuning(
        workspace, "tiny", tiny_model_dir, chunks=store.all_chunks, exclusions=lambda: demo_exclusions(workspace)
    )
    mix = service.grounding_mix(service.versions().snapshot(), TrainConfig(), GroundingOptions(ratio=0.3))
    assert mix.examples and mix.summary["documents"] == 3 and mix.summary["candidates"]["excluded_answer"] > 0
    facts = [json.loads(line) for line in (DEMO / "facts.jsonl").read_text(encoding="utf-8").splitlines()]
    for ex in mix.examples:
        assert not exclusions.excludes_question(ex.prompt)
        assert not any(contains_phrase(ex.answer, a) for f in facts for a in [f["answer"], *f.get("aliases", [])])
        assert ex.provenance["chunk"]["source"] in ("rentals.md", "catalogue_bikes.md", "opening_hours.md")
