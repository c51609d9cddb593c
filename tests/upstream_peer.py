"""Upstream Jumpstarter as a running peer: its virtualenv, its exporter (`jmp run`), its client (`jmp shell`).

Shared by tests/test_upstream.py and bench/bench_interop.py. Every failure is a PeerError whose
message carries what the peer printed.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
HERE = ROOT / "tests" / "upstream"
CUSTOM_YAML = HERE / "custom.yaml"  # served by both exporters in the interop tests and the bench
SETUP = ROOT / "scripts" / "setup-upstream.sh"
START_TIMEOUT = 60


class PeerError(RuntimeError):
    """Upstream could not be installed, started or run to the end; the message says why."""


def default_venv() -> Path:
    return ROOT / os.environ.get("JUMPSTARTER_UPSTREAM_VENV", ".venv-upstream")


def run_showing_progress(
    command: list, progress: Callable[[str], None] | None, timeout: float, **options: Any
) -> subprocess.CompletedProcess:
    """subprocess.run(command) with its output captured; its standard error's lines also go to ``progress`` as
    they come (a long set-up says what it is doing, not a minute of silence)."""
    lines: list[str] = []
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **options) as process:
        assert process.stdout is not None and process.stderr is not None  # PIPEs

        def follow() -> None:
            assert process.stderr is not None
            for line in process.stderr:
                lines.append(line)
                if progress is not None and "is ignored: it is neither" not in line:  # pip, of extra index folders
                    progress(line.rstrip("\n"))

        follower = threading.Thread(target=follow, daemon=True)
        follower.start()
        try:
            stdout = process.stdout.read()
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            follower.join(5)
            raise subprocess.TimeoutExpired(command, timeout, "", "".join(lines)) from None
        follower.join(5)
    return subprocess.CompletedProcess(command, process.returncode, stdout, "".join(lines))


def install_upstream(
    venv: Path | None = None, env: dict[str, str] | None = None, progress: Callable[[str], None] | None = None
) -> Path:
    """Run scripts/setup-upstream.sh (quick when nothing changed); the venv's bin directory. ``progress`` gets
    what the script says it is doing."""
    venv = venv or default_venv()
    env = {**os.environ, **(env or {}), "JUMPSTARTER_UPSTREAM_VENV": str(venv)}
    try:
        done = run_showing_progress([str(SETUP)], progress, timeout=900, env=env)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PeerError(f"can't set up upstream Jumpstarter in {venv}: {SETUP.name}: {exc}") from None
    if done.returncode != 0:
        errors = [line for line in done.stderr.splitlines() if "is ignored: it is neither" not in line]
        raise PeerError(
            f"can't set up upstream Jumpstarter in {venv}: {SETUP.name} exited with {done.returncode}:\n"
            + "\n".join(errors[-30:])
        )
    return venv / "bin"


def peer_env() -> dict[str, str]:
    """Our environment minus what would make upstream's python find our modules; wide lines for its logs."""
    keep = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    return {**keep, "COLUMNS": "200"}  # upstream logs through rich, which wraps at the terminal's width


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def end_group(process: subprocess.Popen, first: int = signal.SIGTERM, grace: float = 10) -> None:
    """Signal the process group ``process`` leads, then SIGKILL it after ``grace`` seconds."""
    try:
        os.killpg(process.pid, first)
        process.wait(grace)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@contextmanager
def upstream_exporter(
    bin_dir: Path, log: Path, *extra: str, config: Path = CUSTOM_YAML, tls: tuple[Path, Path] | None = None
) -> Iterator[str]:
    """Upstream's `jmp run` serving ``config`` on a TCP port of 127.0.0.1; yields its address.

    ``tls`` (certificate, key) serves TLS; without it, plain gRPC (--tls-grpc-insecure).
    """
    port = free_port()
    address = f"127.0.0.1:{port}"
    command = [bin_dir / "jmp", "run", "--exporter-config", config, "--tls-grpc-listener", address]
    command += ["--tls-cert", tls[0], "--tls-key", tls[1]] if tls else ["--tls-grpc-insecure"]
    with log.open("w") as out:
        process = subprocess.Popen(
            [*map(str, command), *extra],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=peer_env(),
            cwd=log.parent,
            start_new_session=True,  # its children end with it
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if process.poll() is not None:
                raise PeerError(f"upstream `jmp run` exited with {process.returncode}:\n{log.read_text()}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise PeerError(
                        f"upstream `jmp run` did not serve at {address} in {START_TIMEOUT} s:\n{log.read_text()}"
                    ) from None
                time.sleep(0.1)
        yield address
    finally:
        end_group(process)


def jmp_shell(
    bin_dir: Path,
    address: str,
    command: list[str | Path],
    *extra: str,
    cwd: Path,
    timeout: float,
    tls_ca: Path | None = None,
) -> subprocess.CompletedProcess:
    """Run ``command`` under upstream's `jmp shell`, connected to the exporter at ``address``.

    With ``tls_ca`` the shell speaks TLS and trusts that CA (through grpc's GRPC_DEFAULT_SSL_ROOTS_FILE_PATH,
    which the command inherits); without it, plain gRPC (--tls-grpc-insecure).
    """
    plain = [] if tls_ca else ["--tls-grpc-insecure"]
    args = [bin_dir / "jmp", "shell", "--tls-grpc", address, *plain, *extra, "--", *command]
    env = {**peer_env(), "GRPC_DEFAULT_SSL_ROOTS_FILE_PATH": str(tls_ca)} if tls_ca else peer_env()
    return run_group(args, env=env, cwd=cwd, timeout=timeout)


def run_group(args: list[str | Path], *, env: dict[str, str], cwd: Path, timeout: float) -> subprocess.CompletedProcess:
    """Run ``args`` to the end, output captured; after ``timeout`` s, kill it with all it started (PeerError)."""
    process = subprocess.Popen(
        list(map(str, args)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=env,
        cwd=cwd,
        start_new_session=True,
    )
    try:
        out, err = process.communicate(timeout=timeout)
        return subprocess.CompletedProcess(args, process.returncode, out, err)
    except subprocess.TimeoutExpired:
        end_group(process, signal.SIGKILL)
    out, err = process.communicate()
    raise PeerError(f"{Path(args[0]).name} {args[1]} did not finish in {timeout:g} s; it printed:\n{out}{err}")
