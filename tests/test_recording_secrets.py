"""Recordings are committed: what is known to be secret is redacted, and replay matches a redacted value."""

from __future__ import annotations

import yaml
from samples import EXAMPLES

BOARD_YAML = EXAMPLES / "jumpstarter-driver-demo" / "board.yaml"

SECRET_TESTS = """
    import pathlib
    import pytest
    from jumpstarter.errors import DriverError

    SIGNATURE, KEY = "abc123sig", 3
    URL = "https://bucket.s3.example/image.raw?X-Amz-Signature={}&X-Amz-Credential=AKIA"

    def test_echo(board):
        address = board.connection.address
        pathlib.Path("address.txt").write_text(address)
        assert board.echo(URL.format(SIGNATURE)).startswith("https://bucket.s3.example/image.raw?")
        board.echo("https://alice:hunter22@git.example/repo.git")
        assert board.echo({"Authorization": "Bearer tok-123456", "name": "x"})["name"] == "x"
        board.echo("the passphrase is s3cret")
        with pytest.raises(DriverError):
            board.fail("value", "no route to " + address)

    @pytest.mark.jumpstarter_secret("board.add:1")
    def test_declared(board):
        assert board.add(2, KEY) == 5
"""


def test_secrets_are_redacted_and_replay_matches_them(pytester):
    pytester.makepyfile(test_board=SECRET_TESTS)
    recorded = pytester.runpytest_subprocess(
        "--exporter", str(BOARD_YAML), "--exporter-passphrase", "s3cret", "--jumpstarter-record", "rec"
    )
    recorded.assert_outcomes(passed=2)
    written = (pytester.path / "rec" / "test_board.yaml").read_text()
    address = (pytester.path / "address.txt").read_text()
    for secret in ("abc123sig", "AKIA", "hunter22", "alice", "tok-123456", "s3cret", address):
        assert secret not in written, secret
    tests = yaml.safe_load(written)["tests"]
    calls = tests["test_echo"]["calls"]
    assert calls[0]["args"] == ["https://bucket.s3.example/image.raw?[REDACTED]"]
    assert calls[0]["result"] == "https://bucket.s3.example/image.raw?[REDACTED]"
    assert calls[1]["args"] == ["https://[REDACTED]@git.example/repo.git"]
    assert calls[2]["args"] == [{"Authorization": "[REDACTED]", "name": "x"}]
    assert calls[3]["args"] == ["the passphrase is [REDACTED]"]
    assert calls[4]["args"] == ["value", "no route to [REDACTED]"]
    assert "[REDACTED]" in calls[4]["error"]["message"]
    assert tests["test_declared"]["calls"] == [{"call": "board.add", "args": [2, "[REDACTED]"], "result": 5}]

    # Replayed with other secrets (a fresh signature, another key): the redacted parts match whatever is passed.
    pytester.makepyfile(test_board=SECRET_TESTS.replace('"abc123sig", 3', '"fresh999", 41'))
    replayed = pytester.runpytest_subprocess("--jumpstarter-replay", "rec")
    replayed.assert_outcomes(passed=2)

    # What isn't redacted must still match.
    pytester.makepyfile(test_board=SECRET_TESTS.replace("bucket.s3.example", "other.example"))
    differs = pytester.runpytest_subprocess("--jumpstarter-replay", "rec")
    differs.assert_outcomes(passed=1, failed=1)
    differs.stdout.fnmatch_lines(  # the mismatch names the test's value redacted too
        [
            "*ReplayMismatch: step 1 differs: expected board.echo('https://bucket.s3.example/image.raw?[[]REDACTED]'), "
            "got board.echo('https://other.example/image.raw?[[]REDACTED]')*"
        ]
    )


def test_a_malformed_secret_marker_is_named(pytester):
    pytester.makepyfile(
        test_board="import pytest\n\n@pytest.mark.jumpstarter_secret('board.add:x')\n"
        "def test_x(board):\n    board.add(1, 1)\n"
    )
    result = pytester.runpytest_subprocess("--exporter", str(BOARD_YAML), "--jumpstarter-record", "rec")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*@pytest.mark.jumpstarter_secret('board.add:x'): name a call ('board.login') or*"])


def test_a_redacted_value_matches_what_stands_there_and_nothing_else():
    from pytest_jumpstarter.redaction import matches

    assert matches(["https://h/p?[REDACTED]", 2], ["https://h/p?sig=1&x=(y)", 2])
    assert matches(["[REDACTED]"], [{"any": "value"}])
    assert matches({"token": "[REDACTED]", "n": 1}, {"token": "t", "n": 1})
    assert not matches(["https://h/p?[REDACTED]"], ["https://h/q?sig=1"])
    assert not matches(["a.b[REDACTED]"], ["axb1"])  # the recorded text is literal around the redacted part
    assert not matches({"token": "[REDACTED]"}, {"token": "t", "more": 1})
    assert not matches(["x", "[REDACTED]"], ["x"])
