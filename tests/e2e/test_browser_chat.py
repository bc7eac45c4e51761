"""The chat as a person uses it (issue #18), in headless Chromium against one real server (tiny
random model, real SQLite, FAISS and generation):

- conversations in a sidebar list, updated the moment a chat starts, highlighted, searchable,
  renamed, deleted and brought back, with no ids on the page;
- the model picker in sight, each reply labelled with the model that wrote it, switching
  mid-conversation recorded;
- curating where you read: 👍 and a reason, Edit in place (example and preference pair, found
  from the toast's button in the Dataset tab), Regenerate, Copy;
- sources folded under a reply's label, opened on click, the supporting sentence highlighted;
- Enter / Shift+Enter / Esc, a dark theme that follows the system, a 390 px wide phone;
- importing ChatGPT and Open WebUI exports, and a malformed file refused with its reason.

Screenshots go to tests/e2e/screenshots/ for review."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ..conftest import read_db
from .conftest import grid_rows, open_tab

pytestmark = [pytest.mark.server, pytest.mark.browser]

ADAPTER = "ux-voice"
EXPORTS = Path(__file__).resolve().parents[1] / "assistant" / "data" / "chat_exports"
DOC = """# Ferry timetable

The Brightwater ferry links Port Alder and Gull Island.

## Weekend sailings

The last weekend sailing leaves Port Alder at 19:55. Bicycles travel free on every sailing.
"""


def _expect():
    from playwright.sync_api import expect

    return expect


@pytest.fixture(scope="module")
def ux(tmp_path_factory, tiny_model_dir):
    """One server for the module: a published adapter and one document in its workspace."""
    from assistant.workspace import Workspace
    from retrieval import open_knowledge

    from ..conftest import random_lora, start_server_process

    ws = tmp_path_factory.mktemp("chat-ux") / "ws"
    workspace = Workspace(ws)
    random_lora(tiny_model_dir, workspace.adapters_dir / ADAPTER, seed=4)
    doc = ws.parent / "ferry.md"
    doc.write_text(DOC)
    open_knowledge(workspace).add_file(doc)
    server = start_server_process(ws, tiny_model_dir, env={"TAILOR_THREADS": "1"})
    yield server, ws
    server.stop()


@pytest.fixture
def chat_page(page, ux):
    server, ws = ux
    page.goto(server.url)
    chat = open_tab(page, "Chat")
    chat.get_by_text("Generation settings").click()
    chat.get_by_label("number input for Max new tokens").fill("16")  # short replies keep it quick
    chat.get_by_label("number input for Max new tokens").press("Enter")
    return page, ws


def _send(page, text: str) -> None:
    expect = _expect()
    before = page.locator("[data-testid='bot']").count()
    box = page.get_by_placeholder("Ask something and press Enter")
    box.fill(text)
    box.press("Enter")
    expect(page.locator("[data-testid='user']").filter(has_text=text).last).to_be_visible()
    expect(page.locator("[data-testid='bot']")).to_have_count(before + 2, timeout=120_000)  # label + text
    # the stats line under the chat (it shows "…" while the reply streams) once it is stored
    expect(page.locator("#tailor-chat-status")).to_have_text(re.compile(r"^\s*\S+ · \d+ tokens"), timeout=120_000)


def _listed(page):
    return page.locator("#tailor-conversation-list label")


def test_conversations_live_in_a_sidebar_list(chat_page, review_screenshots):
    page, ws = chat_page
    expect = _expect()
    _send(page, "Sidebar one: puncture repair")
    # listed and highlighted the moment the chat started, with no refresh
    first = _listed(page).filter(has_text="Sidebar one: puncture repair")
    expect(first).to_have_class(re.compile(r"\bselected\b"))
    page.get_by_role("button", name="+ New chat").click()
    expect(page.locator("[data-testid='user']")).to_have_count(0)
    _send(page, "Sidebar two: chain oil")
    second = _listed(page).filter(has_text="Sidebar two: chain oil")
    expect(second).to_have_class(re.compile(r"\bselected\b"))
    expect(first).not_to_have_class(re.compile(r"\bselected\b"))
    titles = _listed(page).all_inner_texts()
    assert titles.index("Sidebar two: chain oil") < titles.index("Sidebar one: puncture repair")  # newest first
    # No ids anywhere on the page, and no raw id box.
    ids = [row[0] for row in read_db(ws, "SELECT id FROM conversations")]
    shown = page.locator("body").inner_text()
    assert ids and not [i for i in ids if i in shown]
    expect(page.get_by_label("Conversation id")).to_have_count(0)
    page.screenshot(path=str(review_screenshots / "chat-sidebar.png"), full_page=True)

    # Search, then open the first chat from the list.
    page.get_by_placeholder("Search chats").fill("puncture")
    expect(_listed(page)).to_have_count(1)
    first.click()
    expect(page.locator("[data-testid='user']").filter(has_text="Sidebar one: puncture repair")).to_be_visible()
    page.get_by_placeholder("Search chats").fill("")
    expect(second).to_be_visible()

    # Rename it, then delete it and undo.
    page.get_by_text("This chat", exact=True).click()
    title = page.get_by_label("Title", exact=True)
    expect(title).to_have_value("Sidebar one: puncture repair")
    title.fill("Punctures")
    page.get_by_role("button", name="Rename", exact=True).click()
    renamed = _listed(page).filter(has_text="Punctures")
    expect(renamed).to_have_class(re.compile(r"\bselected\b"))
    page.get_by_role("button", name="Delete", exact=True).click()
    expect(renamed).to_have_count(0)
    expect(page.locator("[data-testid='user']")).to_have_count(0)
    page.get_by_role("button", name="↩ Undo delete").click()
    expect(renamed).to_have_class(re.compile(r"\bselected\b"))
    expect(page.locator("[data-testid='user']").filter(has_text="Sidebar one: puncture repair")).to_be_visible()
    assert read_db(ws, "SELECT deleted_at FROM conversations WHERE title='Punctures'") == [(None,)]


def test_the_model_choice_is_in_sight_and_every_reply_says_who_wrote_it(chat_page):
    page, ws = chat_page
    expect = _expect()
    picker = page.get_by_label("Model", exact=True)
    expect(picker).to_be_visible()  # above the chat, not folded into the settings
    expect(picker).to_have_value("base")
    _send(page, "Labels: first from the base")
    expect(page.get_by_role("button", name=re.compile(r"^base · \d+ tokens"))).to_have_count(1)
    picker.click()
    page.get_by_role("option", name=ADAPTER, exact=True).click()
    _send(page, "Labels: then from the adapter")
    expect(page.get_by_role("button", name=re.compile(rf"^{ADAPTER} · \d+ tokens"))).to_have_count(1)
    expect(page.get_by_role("button", name=re.compile(r"^base · \d+ tokens"))).to_have_count(1)
    [(conv,)] = read_db(ws, "SELECT conversation_id FROM messages WHERE content='Labels: first from the base'")
    adapters = read_db(
        ws, "SELECT adapter FROM messages WHERE conversation_id=? AND role='assistant' ORDER BY id", conv
    )
    assert adapters == [(None,), (ADAPTER,)]
    assert read_db(ws, "SELECT adapter FROM conversations WHERE id=?", conv) == [(ADAPTER,)]


def test_curate_where_you_read(chat_page, review_screenshots):
    page, ws = chat_page
    expect = _expect()
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    _send(page, "Curate: do you fix punctures?")
    [(conv, reply_id)] = read_db(
        ws,
        "SELECT conversation_id, id FROM messages WHERE role='assistant' AND conversation_id="
        "(SELECT conversation_id FROM messages WHERE content='Curate: do you fix punctures?')",
    )
    bot = page.locator("[data-testid='bot']").last
    bot.hover()
    page.get_by_role("button", name="Like", exact=True).last.click()
    expect(page.get_by_text("👍 on this reply.")).to_be_visible()
    assert read_db(ws, "SELECT rating, reason FROM feedback WHERE message_id=?", reply_id) == [(1, "")]
    # A reason from under the flag is a 👎 with that reason.
    bot.hover()
    page.get_by_role("button", name="Feedback", exact=True).last.click()
    page.get_by_text("Too long", exact=True).click()
    expect(page.get_by_text("👎 on this reply (Too long).")).to_be_visible()
    assert read_db(ws, "SELECT rating, reason FROM feedback WHERE message_id=?", reply_id) == [(-1, "Too long")]

    # Copy puts the reply alone on the clipboard, not its label.
    said = read_db(ws, "SELECT content FROM messages WHERE id=?", reply_id)[0][0]
    bot.hover()
    page.get_by_role("button", name="Copy message").last.click()
    shown_reply = bot.inner_text().strip()
    page.wait_for_function(
        "async (text) => (await navigator.clipboard.readText()).trim() === text", arg=shown_reply, timeout=10_000
    )

    # Edit in place: saved as an example and a preference pair, and the toast says so.
    bot.hover()
    page.get_by_role("button", name="Edit", exact=True).last.click()
    page.locator("#tailor-chatbot textarea").last.fill("Yes! Bring the bike in and we patch it the same day.")
    page.get_by_role("button", name="Submit", exact=True).click()
    toast = page.get_by_text(re.compile(r"Saved your edit as example \d+ and preference pair \d+"))
    expect(toast.first).to_be_visible()
    example, pair = re.search(r"example (\d+) and preference pair (\d+)", toast.first.inner_text()).groups()
    expect(bot).to_contain_text("Bring the bike in")
    expect(page.get_by_role("button", name=re.compile(r"✏️ edited by you"))).to_be_visible()
    page.screenshot(path=str(review_screenshots / "chat-edited.png"), full_page=True)
    assert read_db(ws, "SELECT edited_content, content FROM messages WHERE id=?", reply_id) == [
        ("Yes! Bring the bike in and we patch it the same day.", said)
    ]
    # ... and "Show in the Dataset tab" opens both there.
    page.get_by_role("button", name="Show in the Dataset tab").click()
    expect(page.get_by_role("tab", name="Dataset", exact=True)).to_have_attribute("aria-selected", "true")
    dataset = page.get_by_role("tabpanel").filter(visible=True)
    expect(dataset.get_by_label("Search", exact=True)).to_have_value(f"#{example} #{pair}")
    expect(dataset.get_by_text("2 match(es)")).to_be_visible()
    rows = {r["id"]: r for r in grid_rows(dataset, "Examples and preference pairs (click a row to edit it)")}
    assert set(rows) == {example, pair}
    assert rows[pair]["answer"].startswith("Yes! Bring the bike in") and rows[pair]["rejected"]
    assert rows[example]["provenance"].startswith(f"chat {conv} · message {reply_id}")
    # The toast's link opens the same search in the Dataset tab of a new page.
    server = page.url.split("?")[0]
    linked = page.context.new_page()
    linked.goto(f"{server}?find=%23{example}")
    expect(linked.get_by_role("tab", name="Dataset", exact=True)).to_have_attribute("aria-selected", "true")
    linked_panel = linked.get_by_role("tabpanel").filter(visible=True)
    expect(linked_panel.get_by_label("Search", exact=True)).to_have_value(f"#{example}")
    expect(linked_panel.get_by_text("1 match(es)")).to_be_visible()
    linked.close()

    # Regenerate: a new reply replaces the last one; the old one is kept with its rating.
    open_tab(page, "Chat")
    page.locator("[data-testid='bot']").last.hover()
    page.get_by_role("button", name="Retry", exact=True).last.click()
    expect(page.locator("[data-testid='bot']").last).not_to_contain_text("Bring the bike in", timeout=120_000)
    page.wait_for_function(
        "() => !document.querySelector('#tailor-chatbot').innerText.includes('writing…')", timeout=120_000
    )
    rows_now = read_db(ws, "SELECT id, superseded_by FROM messages WHERE conversation_id=? AND role='assistant'", conv)
    new_id = max(i for i, _ in rows_now)
    assert dict(rows_now) == {reply_id: new_id, new_id: None}


def test_sources_fold_under_the_reply(chat_page, review_screenshots):
    page, _ = chat_page
    expect = _expect()
    page.get_by_label("Use my documents").check()
    _send(page, "When does the last weekend sailing leave Port Alder?")
    label = page.get_by_role("button", name=re.compile(r"(📚 \d+ sources|\d+ closest passages)")).last
    expect(label).to_be_visible()
    sources = page.locator("[data-testid='bot']").nth(-2)
    expect(sources).not_to_contain_text("ferry.md")  # folded until clicked
    label.click()
    expect(sources).to_contain_text("ferry.md")
    expect(sources.locator("mark").first).to_be_visible()  # the supporting sentence, highlighted
    page.screenshot(path=str(review_screenshots / "chat-sources.png"), full_page=True)


def test_keyboard_dark_theme_and_phone_width(browser, chat_page, ux, review_screenshots):
    page, _ = chat_page
    expect = _expect()
    box = page.get_by_placeholder("Ask something and press Enter")
    box.fill("Keys: line one")
    box.press("Shift+Enter")
    box.type("line two")
    expect(box).to_have_value("Keys: line one\nline two")  # Shift+Enter: a new line, nothing sent
    expect(page.locator("[data-testid='user']")).to_have_count(0)
    box.press("Enter")
    expect(page.locator("[data-testid='user']").filter(has_text="line two")).to_be_visible()
    expect(page.locator("#tailor-chat-status")).to_have_text(re.compile(r"^\s*\S+ · \d+ tokens"), timeout=120_000)
    page.keyboard.press("Escape")  # Esc is the Stop button (nothing is running any more)
    expect(page.get_by_text("Nothing is running.")).to_be_visible()

    server, _ = ux
    for scheme, width in (("dark", 1280), ("light", 390)):
        context = browser.new_context(viewport={"width": width, "height": 844}, color_scheme=scheme)
        try:
            phone = context.new_page()
            phone.goto(server.url)
            expect(phone.get_by_placeholder("Ask something and press Enter")).to_be_visible(timeout=60_000)
            dark = phone.evaluate("document.querySelector('gradio-app .dark, body.dark, .dark') !== null")
            assert dark == (scheme == "dark")
            if width < 768:  # the list starts folded away; the chat and its input fit the width
                expect(phone.locator("#tailor-chat-sidebar")).not_to_have_class(re.compile(r"\bopen\b"))
                box_right = phone.get_by_placeholder("Ask something and press Enter").bounding_box()
                assert box_right["x"] >= 0 and box_right["x"] + box_right["width"] <= width
                scroll = phone.evaluate("document.documentElement.scrollWidth")
                assert scroll <= width + 1, scroll  # nothing wider than the phone
            phone.screenshot(path=str(review_screenshots / f"chat-{scheme}-{width}px.png"), full_page=True)
        finally:
            context.close()


def test_import_chats_from_chatgpt_and_open_webui(chat_page, tmp_path):
    page, ws = chat_page
    expect = _expect()
    upload = page.locator("#tailor-chat-sidebar input[type=file]")
    upload.set_input_files(str(EXPORTS / "chatgpt_conversations.json"))
    expect(page.get_by_text(re.compile(r"Imported 2 conversations \(ChatGPT export"))).to_be_visible()
    expect(_listed(page).filter(has_text="Trip plan")).to_be_visible()
    upload.set_input_files(str(EXPORTS / "openwebui_export.json"))
    expect(page.get_by_text(re.compile(r"Imported \d+ conversations \(Open WebUI export"))).to_be_visible()
    imported = read_db(ws, "SELECT COUNT(*) FROM conversations WHERE external_id IS NOT NULL")[0][0]
    assert imported >= 4
    titles = [t for (t,) in read_db(ws, "SELECT title FROM conversations WHERE external_id LIKE 'openwebui:%'")]
    for title in titles:  # the list has been refreshed with the second import
        expect(_listed(page).filter(has_text=title).first).to_be_visible()
    _listed(page).filter(has_text="Trip plan").click()
    expect(page.locator("[data-testid='user']").first).to_be_visible()
    expect(page.get_by_role("button", name=re.compile(r"imported from chatgpt")).first).to_be_visible()
    bad = tmp_path / "broken.json"
    bad.write_text('[{"title": "x", "mapping": ')
    upload.set_input_files(str(bad))
    expect(page.get_by_text(re.compile(r"not JSON|is not valid JSON", re.I)).first).to_be_visible()
    assert read_db(ws, "SELECT COUNT(*) FROM conversations WHERE external_id IS NOT NULL")[0][0] == imported


def test_compare_mode_vote_is_counted_as_open(chat_page):
    page, ws = chat_page
    expect = _expect()
    compare = open_tab(page, "Compare")
    right = compare.get_by_label("Right", exact=True)
    expect(right).to_have_value(ADAPTER)  # base on the left, the newest adapter on the right
    compare.get_by_label("Use my documents (right)").check()
    compare.get_by_role("button", name="Right is better").click()  # before any reply: refused
    expect(compare.get_by_text("Send a message first")).to_be_visible()
    box = compare.get_by_placeholder("Ask both models something and press Enter")
    box.fill("Compare: when is the last weekend sailing?")
    box.press("Enter")
    page.wait_for_function(
        "() => [...document.querySelectorAll('.tabitem')].some(t => /tokens/.test(t.innerText))", timeout=120_000
    )
    expect(compare.get_by_text(re.compile(r"tokens")).first).to_be_visible(timeout=120_000)
    compare.get_by_role("button", name="Right is better").click()
    expect(
        compare.get_by_text(re.compile(rf"Vote recorded: {ADAPTER}\+rag \(right\) is better than base"))
    ).to_be_visible(timeout=60_000)
    assert read_db(ws, "SELECT player_a, player_b, blind FROM eval_votes") == [("base", f"{ADAPTER}+rag", 0)]
    evaluate = open_tab(page, "Evaluate")
    evaluate.get_by_role("button", name=re.compile(r"^Blind votes")).click()
    votes = page.locator("#blind-votes")
    votes.get_by_role("button", name="Refresh standings").click()
    rows = grid_rows(votes, "Win rates (Wilson 95% intervals), all votes")
    mine = [r for r in rows if r["player"] == f"{ADAPTER}+rag" and r["against"] == "all"]
    assert mine and mine[0]["wins"] == "1" and mine[0]["of which open"] == "1", rows
