"""The allocator tuning for large values (jumpstarter.common.memory): on where glibc is, off when asked."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

CHECK = "from jumpstarter.common.memory import tune_allocator; print(tune_allocator(), tune_allocator())"


def tuned(**env: str) -> str:
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "JUMPSTARTER_MALLOC"))}
    done = subprocess.run(
        [sys.executable, "-c", CHECK], env={**environment, **env}, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the tuning is glibc's")
def test_tuned_once_on_glibc_unless_the_environment_says_otherwise():
    assert tuned() == "True True"
    assert tuned(JUMPSTARTER_MALLOC="default") == "False False"
    assert tuned(MALLOC_TOP_PAD_="131072") == "False False"  # the process's own tuning stands
