"""What makes a precision fast on this machine: bf16 needs AVX512-BF16 or AMX on a CPU (elsewhere it is emulated and
many times slower than fp32) and compute capability 8.0 or newer on an NVIDIA GPU."""

from __future__ import annotations

import platform
import re
from pathlib import Path

import torch

# the CPU's widest vector unit, best first, by the /proc/cpuinfo flag that shows it
VECTOR_UNITS = (("amx_bf16", "AMX"), ("avx512_bf16", "AVX-512 BF16"), ("avx512f", "AVX-512"), ("avx2", "AVX2"))
NATIVE_BF16 = {"amx_bf16", "avx512_bf16", "bf16"}  # x86 AMX and AVX512-BF16; ARM's bf16 extension


def cpuinfo(*fields: str) -> str:
    """The first of `fields` that /proc/cpuinfo has (x86 and ARM name some differently), or ""."""
    info = Path("/proc/cpuinfo")
    text = info.read_text() if info.is_file() else ""
    found = re.search(rf"^(?:{'|'.join(fields)})\s*:\s*(.+)$", text, re.MULTILINE)
    return found.group(1).strip() if found else ""


def cpu_flags() -> set[str]:
    return set(cpuinfo("flags", "Features").split())


def cpu_vector_unit(flags: set[str] | None = None) -> str:
    flags = cpu_flags() if flags is None else flags
    return next((unit for flag, unit in VECTOR_UNITS if flag in flags), "")


def cpu_has_native_bf16(flags: set[str] | None = None) -> bool:
    """True on x86 CPUs with AVX512-BF16 or AMX, and on ARM CPUs with the bf16 extension."""
    flags = cpu_flags() if flags is None else flags
    return bool(flags & NATIVE_BF16)


def runs_on_gpu(accelerator: object) -> bool:
    name = str(accelerator or "auto").lower()
    return name in ("gpu", "cuda") or (name == "auto" and torch.cuda.is_available())


def precision_notice(precision: object, accelerator: object, flags: set[str] | None = None) -> str | None:
    """One line when `precision` asks for bf16 on hardware without it, else None."""
    if "bf16" not in str(precision):
        return None
    if runs_on_gpu(accelerator):
        if torch.cuda.is_available() and not torch.cuda.is_bf16_supported(including_emulation=False):
            return f"{torch.cuda.get_device_name()} has no bf16 units: --trainer.precision=16-mixed is faster"
        return None
    if cpu_has_native_bf16(flags):
        return None
    unit = cpu_vector_unit(flags) or platform.machine()
    return (
        f"precision {precision} on a CPU without AVX512-BF16 or AMX ({unit}) is emulated, often 10-40x slower than "
        f"fp32: pass --trainer.precision=32-true"
    )
