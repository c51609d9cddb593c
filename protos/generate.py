"""Regenerate the Python modules for protos/jumpstarter/v1/*.proto.

Run from anywhere: ``python protos/generate.py``. Output goes to
``jumpstarter/v1/`` (or to ``--out DIR``, which the staleness test uses).
Needs grpcio-tools, pinned in the ``dev`` extra so the output is reproducible.
"""

from __future__ import annotations

import argparse
import sys
from importlib.resources import files
from pathlib import Path

PROTOS = Path(__file__).resolve().parent
ROOT = PROTOS.parent


def generate(out: Path) -> list[Path]:
    """Compile every .proto under protos/ into ``out``; return the files written."""
    from grpc_tools import protoc

    sources = sorted(str(p.relative_to(PROTOS)) for p in PROTOS.rglob("*.proto"))
    include = str(files("grpc_tools") / "_proto")
    out.mkdir(parents=True, exist_ok=True)
    argv = [
        "protoc",
        f"-I{PROTOS}",
        f"-I{include}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        *sources,
    ]
    if protoc.main(argv) != 0:
        raise SystemExit("protoc failed: see the messages above")
    package = out / "jumpstarter" / "v1"
    init = package / "__init__.py"
    init.write_text('"""Generated protobuf and gRPC modules of jumpstarter.v1 (see protos/)."""\n')
    return sorted(package.iterdir())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT, help="root to write jumpstarter/v1/ under")
    args = parser.parse_args()
    for path in generate(args.out):
        print(path, file=sys.stderr)


if __name__ == "__main__":
    main()
