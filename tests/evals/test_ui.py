"""The Evaluate tab's handlers on the tiny model, composed like the app composes them: the
test split of a real dataset version (tuning's snapshot) and the curation store for "save as
training example"."""

import gradio as gr
import pytest

from evals import open_evals
from evals.selection import latest_test_split
from tuning import open_curation
from tuning.editing import example_saver
from ui.eval_tab import SET_FACTS, SET_TEST, build_eval_tab

NO_PROGRESS = lambda *a, **k: None  # noqa: E731 - stands in for gr.Progress outside an event


@pytest.fixture
def tab(workspace, chat, tiny_adapter, facts_file):
    chat.retriever = None
    curation = open_curation(workspace)
    evals = open_evals(workspace, chat, examples=curation.store)  # as build_eval_tab_for_core does
    with gr.Blocks():
        t = build_eval_tab(
            evals,
            test_split=lambda: latest_test_split(workspace, curation.versions),
            facts_path=facts_file,
            save_example=example_saver(curation.store),
        )
    return evals, t


def run_to_end(evals, t, models, kind, n=0, style=None):
    rid, msg = t.start(models, ["off"], kind, None, n, 16, style)
    assert rid in msg
    evals.runs.wait(rid, timeout=300)
    return rid


def test_run_open_compare_and_save_an_example(workspace, tab):
    from tuning.example_store import ExampleStore

    evals, t = tab
    rid = run_to_end(evals, t, ["base", "tuned"], SET_FACTS, n=2)
    df, svg, status, a, b, vx, vy, same = t.open_run(rid, "rouge_l")
    assert same == rid and "done" in status
    assert list(df["Arm"]) == ["base", "tiny-lora"] and "ROUGE-L" in df.columns
    assert svg.startswith("<svg") and "tiny-lora" in svg and "95%" in svg
    assert a["choices"] == ["base", "tiny-lora"]

    md, table = t.compare(rid, "tiny-lora", "base", "ref_loss", "A did worse first")
    assert "permutation" in md and "| base | tiny-lora |" in md  # every pair of arms is tested
    assert len(table) == 2 and list(table["A − B"]) == sorted(table["A − B"], reverse=True)

    item = table["item"].iloc[0]
    message = t.save(rid, "tiny-lora", "base", item, "A")
    assert "Saved" in message
    [example] = ExampleStore(workspace.db).list()
    assert example.answer == evals.store.result(rid, "tiny-lora", item).reply
    assert example.provenance["eval_run"] == rid and "from-eval" in example.tags

    plot, hist = t.history("rouge_l", "all")
    assert set(plot["arm"]) == {"base", "tiny-lora"} and len(hist) == 2
    choices = t.list_runs()["choices"]
    assert choices[0][1] == rid


def test_test_split_comes_from_the_latest_dataset_version(workspace, tab):
    from tuning.example import chat_example
    from tuning.example_store import ExampleStore
    from tuning.versions import DatasetVersions

    evals, t = tab
    with pytest.raises(gr.Error, match="no dataset version"):
        t.start(["base"], ["off"], SET_TEST, None, 0, 16)
    store = ExampleStore(workspace.db)
    store.add_many([chat_example(f"question {i}?", f"answer {i}.") for i in range(30)])
    version = DatasetVersions(workspace, store).snapshot()
    rid = run_to_end(evals, t, ["base"], SET_TEST)
    run = evals.store.get_run(rid)
    assert run.status == "done" and run.set_kind == "test" and run.dataset_version == str(version.id)
    assert run.n_items == version.counts["test"] > 0
    assert {i.id for i in evals.store.items(rid)} == {str(r["example_id"]) for r in version.records("test")}


def test_handlers_turn_errors_into_gradio_errors(tab):
    evals, t = tab
    with pytest.raises(gr.Error, match="upload"):
        t.start(["base"], ["off"], "uploaded file", None, 0, 16)
    with pytest.raises(gr.Error, match="does not exist"):
        t.open_run("missing", "semantic")
    with pytest.raises(gr.Error):
        t.next_pair("", "any two", "any two")
    with pytest.raises(gr.Error):
        t.vote["a"]("")


def test_prompted_arm_with_a_style_prompt_built_from_the_pairs_then_edited(workspace, tab):
    from tuning.example import chat_example
    from tuning.example_store import ExampleStore

    evals, t = tab
    assert "prompted" in t.model_choices()
    with pytest.raises(gr.Error, match="no training pairs"):
        t.build_style_prompt()
    ExampleStore(workspace.db).add_many(
        [chat_example("Rain tips?", "Ahoy! Mudguards, rider.", split="train")], assign_splits=False
    )
    built = t.build_style_prompt()
    assert "Rain tips?" in built and "Ahoy! Mudguards, rider." in built

    edited = built + "\nNever use more than one sentence."
    rid = run_to_end(evals, t, ["base", "prompted"], SET_FACTS, n=1, style=edited)
    run = evals.store.get_run(rid)
    assert run.status == "done" and run.arm_keys == ["base", "prompted"]
    assert run.options["style_prompt"] == edited  # what the user wrote, as used
    rid = run_to_end(evals, t, ["prompted"], SET_FACTS, n=1, style="  ")  # left empty: the default
    assert evals.store.get_run(rid).options["style_prompt"] == built
