"""A Python that has imported what ``jumpstarter run`` needs, waiting to be told what to run.

``python -m jumpstarter.exporter.standby`` imports the exporter (gRPC, protobuf, YAML, asyncio: most of an
exporter's start-up) and then reads one line from its standard input: the JSON of ``{"argv": [...], "env":
{...}}``, the arguments of ``jumpstarter run`` and the variables to add to its environment. It then runs them,
as ``python -m jumpstarter`` would have. An empty standard input (its parent is gone, or didn't need it) ends it
without doing anything: nothing of an exporter (its config, its drivers) is read or made before the line comes.

The pytest plugin starts one as it is loaded, long before it knows for sure which exporters to run (see
``jumpstarter.exporter.process.Standby``).
"""

from __future__ import annotations

import json
import os
import sys

from jumpstarter.cli import main


def run() -> int:
    line = sys.stdin.readline()
    if not line:
        return 0
    order = json.loads(line)
    os.environ.update(order["env"])
    return main(order["argv"])


if __name__ == "__main__":
    sys.exit(run())
