"""What machine a run or a benchmark ran on: its records name it, since seconds and tokens/s are that machine's."""

import os
import platform
from pathlib import Path

import torch


def cpu_model() -> str:
    """The processor's name ('model name' of /proc/cpuinfo where there is one)."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def cpu_description() -> str:
    """The processor, the vector instructions torch uses on it and the cores, e.g. 'AMD EPYC (AVX2), 2 cores'."""
    return f"{cpu_model()} ({torch.backends.cpu.get_cpu_capability()}), {os.cpu_count()} cores"


def load() -> float | None:
    """The one-minute load average (None where the system has none)."""
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None
