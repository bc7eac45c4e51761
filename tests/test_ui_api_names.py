"""Every Gradio event has an explicit, unique api_name: others script against them."""


def test_every_event_has_a_unique_api_name(tiny_core):
    from ui.app import build_ui

    demo = build_ui(tiny_core)
    deps = demo.config["dependencies"]
    assert deps
    names = [d.get("api_name") for d in deps]
    unnamed = [d for d, n in zip(deps, names) if not n]
    assert not unnamed, f"{len(unnamed)} events without an api_name"
    duplicates = {n for n in names if names.count(n) > 1}
    assert not duplicates, f"duplicate api_names: {duplicates}"
