"""The private unix socket an exporter's hooks reach it by (their ``JUMPSTARTER_HOST``), as upstream's hooks do.

A socket, not the exporter's own address: an exporter serving TLS would have its hooks need a CA, and one serving
TCP would have them go through the network stack. It lies in a folder of its own (0700, in the user's private
runtime folder: only this user, who may read the exporter's environment anyway, reaches it), removed at stop. Its
gate asks no passphrase (upstream's client sends none over a unix socket) and, while a hook runs, no lease: a call
there without one is the hook's own, which upstream's ``j`` makes (ours sends the hook's lease, which also works).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import grpc

from jumpstarter.common.folders import runtime_folder


class HookSocket:
    """A second gRPC server for the same services, on a unix socket in a private folder."""

    def __init__(self, methods: grpc.GenericRpcHandler, options: list[tuple[str, Any]]) -> None:
        self.methods, self.options = methods, options
        self.folder: Path | None = None
        self.server: grpc.aio.Server | None = None

    async def start(self) -> str:
        """Serve; the socket's path (as upstream gives it to its hooks: a path, no ``unix://``)."""
        self.folder = Path(tempfile.mkdtemp(prefix="hooks-", dir=runtime_folder()))  # mode 0700
        path = self.folder / "exporter.sock"
        self.server = grpc.aio.server(options=self.options)
        self.server.add_generic_rpc_handlers((self.methods,))
        try:
            self.server.add_insecure_port(f"unix://{path}")
            await self.server.start()
        except RuntimeError as exc:  # grpc's "Failed to bind": a path too long for a unix socket, most likely
            await self.stop()
            size = len(str(path))
            raise OSError(f"can't listen on {path}, the exporter's hooks' socket ({size} characters): {exc}") from None
        except BaseException:
            await self.stop()
            raise
        return str(path)

    async def stop(self) -> None:
        """Stop serving, and remove the folder."""
        if self.server is not None:
            await self.server.stop(grace=1)
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
