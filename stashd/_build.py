"""The wheel's build hook: compiles the C hot path (``_fastpath.c``) next to the sources.

The compiled module lands in ``stashd/`` itself, so an editable install imports it from
the checkout and a wheel carries it as an artifact. Without a C compiler the build fails
and says so; ``STASH_PURE_PYTHON=1`` builds without it, and the daemon then runs every
request through the Python path (same answers, more CPU per command).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sysconfig
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface


class FastPathHook(BuildHookInterface):  # type: ignore[type-arg]  # generic in hatchling's own stubs only
    """Compile ``stashd/_fastpath.c`` for the running interpreter."""

    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        """Build the extension before the wheel (or the editable wheel) is assembled."""
        if self.target_name != "wheel" or os.environ.get("STASH_PURE_PYTHON") == "1":
            return
        package = Path(self.root) / "stashd"
        source = package / "_fastpath.c"
        target = package / f"_fastpath{sysconfig.get_config_var('EXT_SUFFIX')}"
        cc = sysconfig.get_config_var("CC") or "cc"
        link = shlex.split(sysconfig.get_config_var("LDSHARED") or f"{cc} -shared")
        command = [
            *link,
            "-O2",
            "-fPIC",
            "-Wall",
            f"-I{sysconfig.get_paths()['include']}",
            str(source),
            "-o",
            str(target),
        ]
        try:
            subprocess.run(command, check=True, capture_output=True, text=True)  # noqa: S603 - our own compiler line
        except (OSError, subprocess.CalledProcessError) as exc:
            detail = getattr(exc, "stderr", "") or str(exc)
            msg = (
                f"compiling {source.name} failed ({' '.join(command)}):\n{detail}\n"
                "Install a C compiler and Python's headers, or set STASH_PURE_PYTHON=1 "
                "to build without the C hot path."
            )
            raise RuntimeError(msg) from exc
        build_data["pure_python"] = False
        build_data["infer_tag"] = True
        if version != "editable":
            build_data["artifacts"].append(f"/stashd/{target.name}")
