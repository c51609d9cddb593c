"""Serve an example ExporterConfig with ``jumpstarter run`` and call its driver from a client.

Usage: python examples/demo.py [CONFIG]   (default: the seed's custom driver)
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from jumpstarter.client import connect

HERE = Path(__file__).parent


def main() -> int:
    config = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "jumpstarter-custom-driver" / "custom.yaml"
    command = [sys.executable, "-m", "jumpstarter", "run", str(config), "--listen", "127.0.0.1:0"]
    print("$", " ".join(command[2:]).replace("-m jumpstarter", "jumpstarter"))
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as exporter:
        assert exporter.stdout is not None  # stdout=PIPE
        try:
            ready = exporter.stdout.readline()
            if " at " not in ready:
                return exporter.wait() or 1  # it printed why on stderr
            print(ready.strip())
            address = ready.rsplit(" at ", 1)[1].strip()
            with connect(address) as root:
                for name, client in root.children.items():
                    print(f"export {name!r}: {type(client).__module__}.{type(client).__name__}")
                if "custom" in root.children:
                    print(">>> exporter.custom.ls()")
                    print(root.custom.ls(), end="")
                    print(">>> exporter.custom.execute('uname', ['-sm'])")
                    print(root.custom.execute("uname", ["-sm"]), end="")
        finally:
            exporter.terminate()
    return 0


if __name__ == "__main__":
    sys.exit(main())
