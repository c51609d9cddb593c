"""The timeline page is written whole or not at all, and never through a link at its path."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys


def run_pytest(folder, *args: str, file_size_limit: int | None = None) -> subprocess.CompletedProcess:
    """pytest in ``folder``; with ``file_size_limit``, a write past that many bytes fails as on a full disk."""

    def limit() -> None:
        if file_size_limit is not None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead of killing us
            resource.setrlimit(resource.RLIMIT_FSIZE, (file_size_limit, file_size_limit))

    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("JUMPSTARTER_TIMELINE", None)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
        cwd=folder,
        env=env,
        preexec_fn=limit,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_timeline_write_that_fails_half_way_leaves_the_old_page_whole(tmp_path):
    (tmp_path / "test_plain.py").write_text("def test_plain():\n    pass\n")
    first = run_pytest(tmp_path, "--jumpstarter-timeline", "t.html")
    assert first.returncode == 0, first.stdout + first.stderr
    good = (tmp_path / "t.html").read_text()
    assert len(good) > 2000
    failed = run_pytest(tmp_path, "--jumpstarter-timeline", "t.html", file_size_limit=1000)
    assert "jumpstarter: can't write the timeline" in failed.stdout, failed.stdout + failed.stderr
    assert (tmp_path / "t.html").read_text() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.html", "test_plain.py"]  # no temporary file left


def test_the_timeline_replaces_a_link_at_its_path_and_never_writes_through_it(tmp_path):
    (tmp_path / "test_plain.py").write_text("def test_plain():\n    pass\n")
    target = tmp_path / "someone_elses"
    target.write_text("theirs")
    (tmp_path / "t.html").symlink_to(target)
    result = run_pytest(tmp_path, "--jumpstarter-timeline", "t.html")
    assert result.returncode == 0, result.stdout + result.stderr
    assert target.read_text() == "theirs"
    assert not (tmp_path / "t.html").is_symlink() and "<html" in (tmp_path / "t.html").read_text()
