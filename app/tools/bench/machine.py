"""Where a bench run happened: the machine, its load and the library versions, recorded beside
every number so that two runs can be compared (or not)."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any


def loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    env = {k: os.environ[k] for k in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
           if k in os.environ}
    return {"cpu": cpu, "cores": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "loadavg_start": loadavg(), "env": env}


def versions(flywheel: str) -> dict[str, str]:
    import importlib.metadata as md

    out = {"flywheel": flywheel}
    for pkg in ("torch", "transformers", "fastapi", "uvicorn", "sqlalchemy", "psycopg", "uvloop", "httptools"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out
