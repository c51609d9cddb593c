"""A long upload's progress: a line on a terminal, rewritten in place; nothing where stderr is no terminal."""

from __future__ import annotations

import io

import anyio

from jumpstarter.client import uploads


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


async def chunks(count: int, size: int, pause: float):
    for _ in range(count):
        await anyio.sleep(pause)
        yield b"x" * size


def run(out: io.StringIO, total: int | None) -> bytes:
    async def read() -> bytes:
        got = b""
        async for chunk in uploads.with_progress(chunks(10, 100_000, 0.01), "image.raw to dut.flasher", total, out):
            got += chunk
        return got

    return anyio.run(read)


def test_a_long_upload_shows_its_progress_on_a_terminal(monkeypatch):
    monkeypatch.setattr(uploads, "SHOW_AFTER", 0.0)
    monkeypatch.setattr(uploads, "EVERY", 0.0)
    out = Terminal()
    assert run(out, 1_000_000) == b"x" * 1_000_000  # the bytes pass unchanged
    lines = out.getvalue().split("\r")
    assert lines[1].startswith("image.raw to dut.flasher:  10% 0.1/1.0 MB, ")
    assert lines[-1].startswith("image.raw to dut.flasher: 100% 1.0/1.0 MB, ") and lines[-1].endswith("MB/s \n")
    unknown = Terminal()
    run(unknown, None)
    assert unknown.getvalue().split("\r")[-1].startswith("image.raw to dut.flasher: 1.0 MB, ")


def test_an_upload_is_quiet_off_a_terminal_or_when_quick(monkeypatch):
    monkeypatch.setattr(uploads, "SHOW_AFTER", 0.0)
    log = io.StringIO()  # a CI log, pytest's capture: no terminal
    assert run(log, 1_000_000) == b"x" * 1_000_000 and log.getvalue() == ""
    monkeypatch.setattr(uploads, "SHOW_AFTER", 60.0)
    quick = Terminal()
    run(quick, 1_000_000)
    assert quick.getvalue() == ""


def test_the_size_of_what_an_upload_reads_is_known_before_it_starts(tmp_path):
    image = tmp_path / "image.raw"
    image.write_bytes(b"y" * 1234)
    assert uploads.upload_size(b"abc") == 3
    assert uploads.upload_size(image) == 1234 and uploads.upload_size(str(image)) == 1234
    with image.open("rb") as file:
        file.read(34)
        assert uploads.upload_size(file) == 1200  # what is left to read
        assert uploads.upload_label(file, "dut.flasher") == "image.raw to dut.flasher"
    assert uploads.upload_size(chunks(1, 1, 0)) is None
    assert uploads.upload_label(b"abc", "dut.flasher") == "upload to dut.flasher"
