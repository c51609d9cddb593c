"""A small lab for the README's timeline picture: three workers share the demo board and the custom exporter.

    pytest --noconftest -n 3 --exporter examples/jumpstarter-driver-demo/board.yaml \
        --exporter examples/jumpstarter-custom-driver/custom.yaml --jumpstarter-timeline timeline.html examples/timeline

(--noconftest: the repository's conftest.py has a `board` fixture of its own.) Most tests need the board, so it
is the bottleneck: tests queue for it while the custom exporter idles. test_uart fails on purpose.
"""

import pytest


@pytest.mark.parametrize("image", ["v1", "v2", "v3"])
def test_boot(board, image):
    board.power.on()
    assert board.wait(1.0) == 1.0
    board.power.off()


def test_uart(board):
    board.wait(0.6)
    assert board.echo("ping") == "pong"  # fails on purpose: the board echoes what it is sent


def test_link(board, custom):
    board.wait(0.8)
    assert custom.execute("echo", ["up"]) == "up\n"


def test_shell(custom):
    assert custom.execute("sleep", ["1"]) == ""


def test_files(custom):
    assert custom.execute("sleep", ["0.4"]) == ""
