"""The lease pool alone, with fake exporters: which exporters a claim takes, all or none, and what it says."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

import pytest

from jumpstarter.client.lease import Busy
from jumpstarter.errors import ConnectError
from pytest_jumpstarter.exporters import Unanswered
from pytest_jumpstarter.pool import ClaimError
from pytest_jumpstarter.pool import Pool as RealPool

if TYPE_CHECKING:
    from pytest_jumpstarter.exporters import Exporter


class FakeLease:
    def __init__(self, exporter: FakeExporter) -> None:
        self.exporter = exporter

    def release(self) -> None:
        self.exporter.holder = None


class FakeExporter:
    """The part of an Exporter the pool uses: what it provides, its labels, and its lease."""

    def __init__(self, name: str, exports: list[str], labels: dict[str, str] | None = None) -> None:
        self.name, self.exports, self.labels = name, exports, labels or {}
        self.holder: str | None = None
        self.gone: str | None = None
        self.unreachable = False
        self.waiter = False  # it refused someone who hasn't said they stopped waiting
        self.silent = 0  # its next tries that find it not answering again yet (its connection broke)

    def provides(self, export: str | None) -> bool:
        return export is None or export in self.exports

    def matches(self, labels: dict[str, str]) -> bool:
        return all(self.labels.get(k) == v for k, v in labels.items())

    def failure(self) -> str | None:
        return self.gone

    def try_lease(self, holder: str) -> FakeLease | Busy | Unanswered:
        if self.silent:
            self.silent -= 1
            return Unanswered(0.0, "a ping went unanswered")
        if self.unreachable:
            self.gone = f"exporter {self.name} can't be reached"
            raise ConnectError(self.gone)
        if self.holder is not None:
            self.waiter = True
            return Busy(self.holder, 0.0)
        self.holder = holder
        return FakeLease(self)

    def stop_waiting(self) -> None:
        self.waiter = False


def Pool(exporters: list[FakeExporter], offset: int = 0) -> RealPool:  # noqa: N802 - reads as the class it makes
    """The pool, of fakes that have the part of an Exporter it uses."""
    return RealPool(cast("list[Exporter]", exporters), offset)


def test_a_claim_takes_every_lease_or_none_and_names_who_is_in_the_way():
    dut, peer = FakeExporter("a", ["dut"]), FakeExporter("b", ["peer"])
    peer.holder = "someone else"
    notes: list[str] = []
    with pytest.raises(ClaimError, match=r"waited 0.05 s for export 'dut' and export 'peer': b leased by someone"):
        Pool([dut, peer]).claim({"dut": {}, "peer": {}}, "me", timeout=0.05, notify=notes.append)
    assert dut.holder is None  # the free one was given back while waiting, not held: no deadlock
    assert notes and notes[0].startswith("waiting for export 'dut' and export 'peer': b leased by someone else")
    peer.holder = None
    claim = Pool([dut, peer]).claim({"dut": {}, "peer": {}}, "me", timeout=1)
    assert (claim.chosen["dut"], claim.chosen["peer"]) == (dut, peer) and dut.holder == peer.holder == "me"
    claim.release()
    assert dut.holder is None and peer.holder is None


def test_labels_choose_and_the_bare_exporter_need_reuses_one_taken():
    rpi4, rpi5 = FakeExporter("x", ["dut"], {"board": "rpi4"}), FakeExporter("y", ["dut"], {"board": "rpi5"})
    claim = Pool([rpi4, rpi5]).claim({"dut": {"board": "rpi5"}, None: {}}, "me", timeout=1)
    assert claim.chosen == {"dut": rpi5, None: rpi5} and rpi4.holder is None
    claim.release()


def test_workers_start_at_different_exporters():
    boards = [FakeExporter(f"b{i}", ["dut"]) for i in range(3)]
    assert [Pool(boards, offset).claim({"dut": {}}, f"gw{offset}", 1).first.name for offset in range(3)] == [
        "b0",
        "b1",
        "b2",
    ]


def test_no_fit_and_gone_exporters_fail_at_once_saying_why():
    board = FakeExporter("rpi", ["dut"], {"board": "rpi4"})
    with pytest.raises(ClaimError, match=r"no exporter provides export 'dut' with board=pi9 \(exporters: rpi \(board="):
        Pool([board]).claim({"dut": {"board": "pi9"}}, "me", timeout=60)
    board.unreachable = True
    with pytest.raises(ClaimError, match="no exporter left for export 'dut': exporter rpi can't be reached"):
        Pool([board]).claim({"dut": {}}, "me", timeout=60)
    spare = FakeExporter("spare", ["dut"])
    assert Pool([board, spare]).claim({"dut": {}}, "me", timeout=60).first is spare  # the others go on


def test_a_claim_tells_the_exporters_it_found_busy_that_it_no_longer_waits():
    """Else a busy exporter, once free, would be held free for a moment for a worker that went elsewhere."""
    busy, free = FakeExporter("b0", ["dut"]), FakeExporter("b1", ["dut"])
    busy.holder = "gw1"
    claim = Pool([busy, free]).claim({"dut": {}}, "gw0", timeout=1)
    assert claim.first is free and claim.waited_for == () and not busy.waiter  # found busy, then not waited for
    with pytest.raises(ClaimError):
        Pool([free]).claim({"dut": {}}, "gw2", timeout=0.05)
    assert not free.waiter  # giving up stops the waiting too


def test_a_claim_waits_for_an_exporter_that_has_not_answered_again_yet():
    """Its connection broke (a ping unanswered) but it may answer again: waited for, like a busy one, not dropped."""
    board = FakeExporter("rpi", ["dut"])
    board.silent = 3
    notes: list[str] = []
    claim = Pool([board]).claim({"dut": {}}, "me", timeout=60, notify=notes.append)
    assert claim.first is board and board.holder == "me" and claim.waited_for == ("rpi",)
    assert notes[0].startswith("waiting for export 'dut': rpi has not answered since ")
