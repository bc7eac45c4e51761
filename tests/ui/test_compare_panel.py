"""The Compare tab (ui/compare_panel.py) and the Tune tab's "Compare in chat" button: the send
handler fills both chatbots, each side reads the documents or not, the vote buttons record an
open vote that the Evaluate tab counts with the blind ones, the right side offers adapters
only, and a job that has not published an adapter gets a clear message instead of an empty
comparison."""

from types import SimpleNamespace

import gradio as gr
import pytest

from assistant.adapters import AdapterCatalog
from assistant.chat import ChatService
from assistant.conversations import ConversationLog
from assistant.prompting import Passage, Retrieval

ADAPTER = "compare-ui"
FERRY = "The first weekday summer ferry leaves Lantern Bay at 07:10 from pier 2."


class OnePassage:
    """A retriever that always finds the same passage (no index, no embedding model)."""

    def __init__(self):
        self.queries: list[str] = []

    def retrieve(self, query: str, k: int = 4) -> Retrieval:
        self.queries.append(query)
        return Retrieval([Passage(id=1, source="timetable.md", text=FERRY, score=0.9)])


@pytest.fixture
def chat(tiny_engine, workspace, tiny_model_dir, random_lora):
    random_lora(tiny_model_dir, workspace.adapters_dir / ADAPTER, seed=7)
    return ChatService(tiny_engine, ConversationLog(workspace.db), AdapterCatalog(workspace.adapters_dir))


@pytest.fixture
def panel(chat):
    from ui.compare_panel import build_compare_panel

    with gr.Blocks():
        return build_compare_panel(chat)


def test_send_fills_both_chatbots_and_continues_both_conversations(panel, chat):
    outputs = list(panel.send("hello", "base", ADAPTER, "", "", "", 0.0, 16))
    left, right, left_id, right_id, cleared, status = outputs[-1]
    roles = ["user", "assistant", "assistant"]
    assert [m["role"] for m in left] == roles and [m["role"] for m in right] == roles
    assert left[0]["content"] == right[0]["content"] == "hello"
    # each reply as the chat shows it: its label (which model wrote it), then its text
    assert left[1]["metadata"]["title"].startswith("base · ") and right[1]["metadata"]["title"].startswith(ADAPTER)
    assert left[2]["content"] == chat.log.get(left_id).messages[-1].content
    assert right[2]["content"] == chat.log.get(right_id).messages[-1].content
    assert left_id != right_id and cleared == ""
    assert status.startswith("base · ") and f" · {ADAPTER} · " in status
    # the next message goes on in both conversations
    *_, (left2, right2, left_id2, right_id2, _, _) = panel.send("more", "base", ADAPTER, left_id, right_id, "", 0, 16)
    assert (left_id2, right_id2) == (left_id, right_id)
    assert len(left2) == len(right2) == 6  # two turns: a question, a label and a reply each
    assert panel.stop(left_id, right_id) == "Nothing is running."
    assert panel.new_comparison()[:4] == ([], [], "", "")


def test_each_side_reads_the_documents_or_not(panel, chat, tiny_engine, monkeypatch):
    chat.retriever = OnePassage()
    prompts = {}
    real = tiny_engine.stream

    def spy(messages, options=None, adapter=None):
        prompts[adapter] = messages[-1]["content"]
        return real(messages, options, adapter)

    monkeypatch.setattr(tiny_engine, "stream", spy)
    # message, left model, right model, ids, system, temperature, max new tokens, both sides (old 9th input), left, right
    *_, (left, right, left_id, right_id, _, _) = panel.send(
        "When does the ferry leave?", "base", ADAPTER, "", "", "", 0, 16, False, False, True
    )
    assert FERRY not in prompts[None] and FERRY in prompts[ADAPTER]
    assert chat.retriever.queries == ["When does the ferry leave?"]
    replies = [chat.log.get(i).messages[-1] for i in (left_id, right_id)]
    assert replies[0].retrieval is None and replies[1].retrieval["passages"][0]["source"] == "timetable.md"
    assert "**Sources**" not in left[-2]["content"] and "**Sources**" in right[-2]["content"]  # folded under the label
    assert (chat.log.get(left_id).rag, chat.log.get(right_id).rag) == (False, True)
    # the vote names the players as the evaluation does: the right side read the documents
    assert f"**{ADAPTER}+rag** (right) is better than **base** (left)" in panel.vote["right"](left_id, right_id)
    # a caller that sends only the old 9 inputs: its "use my documents" still means both sides
    prompts.clear()
    list(panel.send("When does the ferry leave?", "base", ADAPTER, "", "", "", 0, 16, True))
    assert FERRY in prompts[None] and FERRY in prompts[ADAPTER]
    # the same model on both sides is a comparison when only one side reads the documents
    *_, (_, _, a_id, b_id, _, _) = panel.send("Ferry?", ADAPTER, ADAPTER, "", "", "", 0, 16, False, False, True)
    assert "Vote recorded" in panel.vote["tie"](a_id, b_id)


def test_vote_buttons_record_an_open_vote_counted_with_the_blind_ones(panel, chat):
    from evals.store import EvalStore
    from evals.votes import VoteService
    from ui.eval_format import win_frame

    assert panel.vote["left"]("", "").startswith("⚠️ Send a message first")
    *_, (_, _, left_id, right_id, _, _) = panel.send("hello", "base", ADAPTER, "", "", "", 0.0, 16)
    status = panel.vote["left"](left_id, right_id)
    assert status.startswith(f"Vote recorded: **base** (left) is better than **{ADAPTER}** (right).")
    assert "open vote" in status
    status = panel.vote["right"](left_id, right_id)
    assert "replaces your earlier vote on these replies (Left is better)" in status
    store = EvalStore(chat.log.db)
    [row] = store.votes()
    replies = [chat.log.get(i).messages[-1].id for i in (left_id, right_id)]
    assert (row["blind"], row["player_a"], row["player_b"], row["choice"]) == (0, "base", ADAPTER, "b")
    assert [row["message_a"], row["message_b"]] == replies
    # a blind vote from an evaluation run on the same two players: both count, one of them open
    run = store.create_run(
        set_kind="file",
        set_name="t",
        set_fingerprint="x",
        dataset_version=None,
        base_model="tiny",
        arms=[],
        options={},
        items=[],
    )
    VoteService(store).vote(store.create_pair(run.id, "i1", ADAPTER, "base"), "A better")
    table = win_frame(VoteService(store).win_rates()).set_index(["player", "against"])
    assert table.loc[(ADAPTER, "all"), ["votes", "wins", "of which open"]].tolist() == [2, 2, 1]
    # a side still answering: nothing to vote on yet (its user message is logged, its reply not)
    chat.log.add_message(right_id, "user", "more")
    assert panel.vote["tie"](left_id, right_id).startswith("⚠️ Wait for both replies before voting")
    assert len(store.votes()) == 2


def test_empty_message_or_no_adapter_is_a_clear_error(panel):
    with pytest.raises(gr.Error, match="Type a message"):
        list(panel.send("  ", "base", ADAPTER, "", "", "", 0, 16))
    with pytest.raises(gr.Error, match="Pick a model for the right side"):
        list(panel.send("hi", "base", None, "", "", "", 0, 16))
    with pytest.raises(gr.Error, match="two different models"):
        list(panel.send("hi", ADAPTER, ADAPTER, "", "", "", 0, 16))


def test_model_choices(panel, chat):
    left, right = panel.list_models("base", None)
    assert left["choices"] == ["base", ADAPTER] and "value" not in left  # kept as it is
    assert right["choices"] == [ADAPTER] and right["value"] == ADAPTER  # the base is the left side's
    assert "value" not in panel.list_models("base", ADAPTER)[1]
    assert [u["value"] for u in panel.list_models("gone", "gone")] == ["base", ADAPTER]


def test_compare_in_chat_opens_a_finished_jobs_adapter_only():
    from ui.compare_panel import COMPARE_TAB_ID, open_compare_for_job

    models = ["base", "tailor-v1"]
    done = SimpleNamespace(id=4, status="succeeded", adapter_name="tailor-v1")
    message, dropdown, tabs = open_compare_for_job(done, models)
    assert dropdown["value"] == "tailor-v1" and dropdown["choices"] == ["tailor-v1"]
    assert isinstance(tabs, gr.Tabs) and tabs.selected == COMPARE_TAB_ID
    assert "tailor-v1" in message

    for job, expected in [
        (SimpleNamespace(id=5, status="running", adapter_name=None), "Job 5 is still running"),
        (SimpleNamespace(id=6, status="queued", adapter_name=None), "Job 6 is still queued"),
        (SimpleNamespace(id=7, status="failed", adapter_name=None), "Job 7 failed and published no adapter"),
        (SimpleNamespace(id=8, status="succeeded", adapter_name="renamed-away"), "no longer published"),
        (None, "no training job yet"),
    ]:
        message, dropdown, tabs = open_compare_for_job(job, models)
        assert expected in message
        assert dropdown == gr.update() and tabs == gr.update()  # nothing moves


def test_the_tune_tabs_button_in_the_app(tiny_core, workspace):
    """Built as the app builds it: the button's event exists and answers a job that is not done."""
    from tuning.config import TrainConfig
    from tuning.job_store import JobStore
    from ui.app import build_ui
    from ui.compare_panel import COMPARE_TAB_ID

    store = JobStore(workspace)
    job_id, _ = store.insert(
        family="tailor",
        activate=False,
        base_model="tiny",
        base_model_path=workspace.root,
        dataset_version=1,
        dataset_path=workspace.root,
        dataset_hash=None,
        config=TrainConfig(),
        threads=1,
    )
    store.finish(job_id, "cancelled")  # before the app starts: its job thread must not run it
    demo = build_ui(tiny_core)
    by_name = {fn.api_name: fn for fn in demo.fns.values()}
    assert {"compare_send", "compare_stop", "compare_new", "compare_on_open"} <= set(by_name)
    votes = ["compare_vote_left", "compare_vote_right", "compare_vote_tie", "compare_vote_both_bad"]
    assert all(len(by_name[v].inputs) == 2 and len(by_name[v].outputs) == 1 for v in votes)
    assert len(by_name["compare_send"].inputs) == 11  # the old 9, then each side's "Use my documents"
    assert "⚠️ Send a message first" in by_name["compare_vote_left"].fn("", "")
    button = by_name["tune_compare_in_chat"]
    message, dropdown, tabs = button.fn(str(job_id))
    assert f"Job {job_id} cancelled and published no adapter" in message
    assert dropdown == gr.update() and tabs == gr.update()
    # its last output is the app's gr.Tabs, and one of those tabs is the Compare tab it selects
    app_tabs = next(block for block in demo.blocks.values() if isinstance(block, gr.Tabs))
    assert button.outputs[-1] is app_tabs
    assert COMPARE_TAB_ID in [getattr(block, "id", None) for block in demo.blocks.values() if isinstance(block, gr.Tab)]
