"""Adapter export (folder, zip) and the merged model, which must answer like base + adapter."""

from __future__ import annotations

import json
import zipfile

import pytest

from assistant.adapters import AdapterCatalog
from assistant.engine import GenerationOptions
from assistant.errors import NotFoundError, ValidationError
from assistant.hardware import pick_hardware
from assistant.models import ResolvedModel
from assistant.torch_engine import TorchEngine
from tuning.export import export_adapter, export_merged

PROMPTS = ["What is the capital of France?", "hello", "Pump your tyres before every ride."]
GREEDY = GenerationOptions(temperature=0, max_new_tokens=16)


def _engine(path, name="tiny", max_context=512):
    return TorchEngine.load(ResolvedModel(name, path, "folder"), pick_hardware("cpu"), max_context=max_context)


def test_adapter_folder_and_zip(workspace, tiny_model_dir, random_lora, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    random_lora(tiny_model_dir, workspace.adapters_dir / "pirate")
    catalog = AdapterCatalog(workspace.adapters_dir)
    folder = export_adapter(catalog, "pirate", tmp_path / "out" / "pirate")
    assert folder.kind == "adapter-folder" and folder.files >= 3
    names = {p.name for p in folder.path.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "tailor.json"} <= names
    assert not any(n.startswith(".") for n in names)
    # PEFT loads the exported folder on the base model
    peft_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), folder.path)
    assert "default" in peft_model.peft_config

    zipped = export_adapter(catalog, "pirate", tmp_path / "out" / "pirate.zip", fmt="zip")
    with zipfile.ZipFile(zipped.path) as zf:
        assert zf.testzip() is None
        entries = set(zf.namelist())
    assert {"pirate/adapter_config.json", "pirate/adapter_model.safetensors", "pirate/tailor.json"} <= entries

    with pytest.raises(ValidationError, match="already exists"):
        export_adapter(catalog, "pirate", folder.path)
    assert export_adapter(catalog, "pirate", folder.path, overwrite=True).path == folder.path
    with pytest.raises(NotFoundError, match="does not exist"):
        export_adapter(catalog, "nobody", tmp_path / "x")
    with pytest.raises(ValidationError, match="folder or zip"):
        export_adapter(catalog, "pirate", tmp_path / "y", fmt="rar")
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "thesis.txt").write_text("years of work")
    with pytest.raises(ValidationError, match="not an earlier export"):
        export_adapter(catalog, "pirate", tmp_path / "precious", overwrite=True)
    assert (tmp_path / "precious" / "thesis.txt").read_text() == "years of work"


def test_incomplete_adapter_is_refused(workspace, tmp_path):
    broken = workspace.adapters_dir / "broken"
    broken.mkdir()
    (broken / "adapter_config.json").write_text("{}")
    with pytest.raises(ValidationError, match="adapter_model.safetensors missing"):
        export_adapter(AdapterCatalog(workspace.adapters_dir), "broken", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_merged_model_answers_like_base_plus_adapter(workspace, tiny_model_dir, random_lora, tmp_path):
    adapter_dir = random_lora(tiny_model_dir, workspace.adapters_dir / "pirate")
    serving = _engine(tiny_model_dir)
    serving.load_adapter("pirate", adapter_dir)
    result = export_merged(
        tiny_model_dir, AdapterCatalog(workspace.adapters_dir), "pirate", tmp_path / "merged", base_name="tiny"
    )
    files = {p.name for p in result.path.iterdir()}
    assert "config.json" in files and any(f.endswith(".safetensors") for f in files)
    assert not any(f.endswith((".bin", ".pt")) for f in files)
    assert json.loads((result.path / "tailor-export.json").read_text())["adapter"] == "pirate"
    assert "lora" not in (result.path / "config.json").read_text().lower()

    merged = _engine(result.path, "merged")  # plain transformers, no PEFT
    differs = False
    for prompt in PROMPTS:
        messages = [{"role": "user", "content": prompt}]
        tuned = serving.generate(messages, GREEDY, adapter="pirate")
        got = merged.generate(messages, GREEDY)
        assert got.text == tuned.text and got.completion_tokens == tuned.completion_tokens, prompt
        differs |= serving.generate(messages, GREEDY).text != tuned.text
    assert differs, "the adapter must change the answers, or this test could not fail"
    # exporting did not touch the running engine's base weights
    assert (
        serving.generate([{"role": "user", "content": "hello"}], GREEDY).text
        == _engine(tiny_model_dir).generate([{"role": "user", "content": "hello"}], GREEDY).text
    )


@pytest.mark.real
def test_merged_default_model_matches_adapter(real_model, tmp_path, random_lora):
    """The same check on the real default model (SmolLM2-135M-Instruct) with a small random LoRA."""
    import torch

    from assistant.workspace import Workspace

    ws = Workspace(tmp_path / "ws")
    adapter_dir = random_lora(real_model.path, ws.adapters_dir / "tone", seed=3)
    # keep the random adapter small: a nudge, not noise, so the answers stay readable
    from safetensors.torch import load_file, save_file

    weights = {k: v * 0.3 for k, v in load_file(adapter_dir / "adapter_model.safetensors").items()}
    save_file(weights, adapter_dir / "adapter_model.safetensors")
    serving = _engine(real_model.path, "real", max_context=2048)
    serving.load_adapter("tone", adapter_dir)
    result = export_merged(real_model.path, AdapterCatalog(ws.adapters_dir), "tone", tmp_path / "merged")
    merged = _engine(result.path, "merged", max_context=2048)
    options = GenerationOptions(temperature=0, max_new_tokens=16, repetition_penalty=1.0)
    differs = False
    for prompt in ("What is the capital of France?", "Give me one tip for cycling in the rain."):
        messages = [{"role": "user", "content": prompt}]
        tuned = serving.generate(messages, options, adapter="tone")
        assert merged.generate(messages, options).text == tuned.text, prompt
        differs |= serving.generate(messages, options).text != tuned.text
    ids = torch.tensor([serving.encode([{"role": "user", "content": "hello"}])])
    with torch.inference_mode():
        serving.model.set_adapter("tone")
        a = serving.model(input_ids=ids).logits
        b = merged.model(input_ids=ids).logits
    assert torch.allclose(a, b, atol=1e-3), (a - b).abs().max()
    assert differs
