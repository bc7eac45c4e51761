"""How retrieved passages are shown to the model (assistant/prompting.py, owned by retrieval)."""

from assistant.prompting import (
    ANSWER_INSTRUCTION,
    Passage,
    build_messages,
    grounded_user_message,
    split_grounded_user_message,
)

PASSAGES = [
    Passage(id=7, source="rentals.md", heading="Bike Rentals > Deposit and ID", text="We take a deposit of €150.\n"),
    Passage(id=9, source="warranty.md", text="Frames: 7 years."),
]


def test_instruction_then_sources_best_last_then_question():
    text = grounded_user_message("How big is the deposit?", PASSAGES)
    assert text == (
        ANSWER_INSTRUCTION + "\n\n"
        "[2] warranty.md\nFrames: 7 years.\n\n"
        "[1] rentals.md — Bike Rentals > Deposit and ID\nWe take a deposit of €150.\n\n"
        "Question: How big is the deposit?"
    )
    assert "say you could not find it" in ANSWER_INSTRUCTION
    assert grounded_user_message("hi", []) == "hi"


def test_split_is_the_inverse():
    text = grounded_user_message("How big is the deposit?\nAnd the ID?", PASSAGES)
    question, sources = split_grounded_user_message(text)
    assert question == "How big is the deposit?\nAnd the ID?"
    assert sources.startswith("[2] warranty.md") and sources.endswith("We take a deposit of €150.")
    assert split_grounded_user_message("Question: plain text") == ("Question: plain text", None)


def test_only_the_newest_turn_carries_sources():
    history = [{"role": "user", "content": "earlier"}, {"role": "assistant", "content": "reply"}]
    msgs = build_messages(history, "How big is the deposit?", "Be brief.", PASSAGES)
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user"]
    assert msgs[1]["content"] == "earlier" and "[1] rentals.md" in msgs[-1]["content"]
