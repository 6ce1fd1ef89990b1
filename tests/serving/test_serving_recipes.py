"""The recipe table, vLLM arguments, weights-folder errors, and the backend config."""

from __future__ import annotations

import json

import pytest

from serving.config import BackendConfig
from serving.images import fit_pixels
from serving.recipes import get_recipe, recipe_names, resolve_recipe


def test_table_has_the_supported_models():
    names = set(recipe_names())
    assert {"qwen2.5-vl-3b", "qwen2.5-vl-7b", "cosmos-reason1-7b", "qwen3-8b", "embedded"} <= names
    for name in names:
        r = get_recipe(name)
        assert r.served_name and r.max_model_len_tokens > 0
        if name.startswith(("qwen2.5-vl", "cosmos")):
            assert r.images_per_prompt > 0 and 0 < r.min_pixels < r.max_pixels


def test_vllm_args_for_a_vision_recipe(tmp_path):
    args = get_recipe("qwen2.5-vl-7b").vllm_args(tmp_path)
    joined = " ".join(args)
    assert args[args.index("--model") + 1] == str(tmp_path)
    assert json.loads(args[args.index("--limit-mm-per-prompt") + 1]) == {"image": 8, "video": 0}
    assert json.loads(args[args.index("--mm-processor-kwargs") + 1])["max_pixels"] == 640 * 28 * 28
    assert (
        json.loads(args[args.index("--structured-outputs-config") + 1])["disable_any_whitespace"]
        is True
    )
    assert "--enforce-eager" not in joined  # GPU recipe keeps CUDA graphs


def test_embedded_recipe_has_the_cpu_workarounds(tmp_path):
    r = get_recipe("embedded")
    args = r.vllm_args(tmp_path)
    assert "--enforce-eager" in args and args[args.index("--dtype") + 1] == "float32"
    assert r.env == {"VLLM_CPU_NUM_OF_RESERVED_CPU": "0", "VLLM_CPU_KVCACHE_SPACE": "1",
                     "VLLM_EXECUTE_MODEL_TIMEOUT_SECONDS": "3600"}


def test_missing_weights_error_names_folder_and_air_gap_steps(tmp_path, monkeypatch):
    monkeypatch.setenv("FAILTAX_MODELS_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError) as e:
        get_recipe("cosmos-reason1-7b").require_model_dir()
    msg = str(e.value)
    assert str(tmp_path / "Cosmos-Reason1-7B") in msg and "nvidia/Cosmos-Reason1-7B" in msg
    assert "air-gapped" in msg and "FAILTAX_MODELS_DIR" in msg


def test_model_folder_inherits_the_matching_recipe(tmp_path):
    folder = tmp_path / "Qwen2.5-VL-3B-Instruct"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    r = resolve_recipe(str(folder))
    assert r.name == "qwen2.5-vl-3b" and r.images_per_prompt == 8
    assert r.require_model_dir() == folder
    other = tmp_path / "my-model"
    other.mkdir()
    assert resolve_recipe(str(other), device="cpu").served_name == "my-model"


def test_unknown_recipe_lists_valid_names():
    with pytest.raises(ValueError, match="valid: .*embedded"):
        resolve_recipe("qwen-nonexistent")


def test_backend_config_checks():
    assert BackendConfig().kind == "embedded"
    with pytest.raises(ValueError, match="base_url"):
        BackendConfig(kind="openai")
    with pytest.raises(ValueError, match="NAME of an environment variable"):
        BackendConfig(kind="openai", base_url="http://x/v1", api_key_env="sk-abc-123!")
    with pytest.raises(ValueError):
        BackendConfig(kind="openai", base_url="http://x/v1", temperature=0.3)  # unknown key


def test_fit_pixels_respects_bounds_and_factor():
    lo, hi = 64 * 784, 640 * 784
    for w, h in [(64, 64), (1920, 1080), (100, 3000), (640, 480)]:
        fw, fh = fit_pixels(w, h, lo, hi)
        assert fw % 28 == 0 and fh % 28 == 0
        assert lo <= fw * fh <= hi, (w, h, fw, fh)
    assert fit_pixels(280, 280, 0, 0) == (280, 280)


def test_shipped_configs_load():
    from pathlib import Path

    from common import load_yaml

    files = sorted((Path(__file__).parents[2] / "configs" / "serving").glob("*.yaml"))
    assert files
    for f in files:
        cfg = load_yaml(BackendConfig, f)
        if cfg.recipe:
            get_recipe(cfg.recipe)
