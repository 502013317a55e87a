"""What machine a measurement was taken on (for benchmark and report files)."""

from __future__ import annotations

import os
import platform
from typing import Any


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# CPU features that decide whether int8 inference pays off on x86: AVX2 and AVX-512 multiply
# int8 only through multi-instruction sequences; VNNI (AVX512_VNNI, or AVX_VNNI on 256-bit
# cores) does an int8 dot product in one instruction; AMX adds int8 matrix tiles.
INT8_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_tile", "amx_int8")


def cpu_flags() -> set[str]:
    """The CPU's feature flags from /proc/cpuinfo (an empty set where it cannot be read)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def int8_flags() -> dict[str, bool]:
    """Which of the x86 instruction sets relevant to int8 speed (INT8_FLAGS) this CPU has."""
    flags = cpu_flags()
    return {name: name in flags for name in INT8_FLAGS}


def machine_info() -> dict[str, Any]:
    """CPU, core count, threads and library versions, for results files."""
    import torch
    import transformers

    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "platform": platform.platform(),
    }
