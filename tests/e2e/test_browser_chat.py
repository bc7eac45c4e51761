"""A person in a browser: open the app, chat, see the reply stream in, find the conversation
in the list after starting a new chat."""

import pytest

pytestmark = [pytest.mark.server, pytest.mark.browser]


def test_chat_in_the_browser(page, tailor_server, tiny_model_dir, tmp_path, review_screenshots):
    server = tailor_server(tmp_path / "ws", tiny_model_dir)
    page.goto(server.url)
    page.get_by_placeholder("Ask something and press Enter").fill("Hello from the browser")
    page.get_by_role("button", name="Send", exact=True).click()
    bubble = page.locator(".message.user, [data-testid='user']").filter(has_text="Hello from the browser")
    bubble.first.wait_for()
    page.get_by_text("tokens ·").first.wait_for()  # the stats line appears when the reply is stored
    page.screenshot(path=str(review_screenshots / "chat-first-reply.png"), full_page=True)
    conv_id = page.get_by_label("Conversation id").input_value()
    assert len(conv_id) == 20

    page.get_by_role("button", name="New chat").click()
    page.get_by_text("New conversation: type a message.").wait_for()
    assert page.get_by_label("Conversation id").input_value() == ""
    page.get_by_role("button", name="Refresh list").click()
    page.get_by_label("Past conversations").click()
    page.get_by_role("option", name="Hello from the browser").first.click()
    page.get_by_text("Opened").first.wait_for()
    assert page.get_by_label("Conversation id").input_value() == conv_id
