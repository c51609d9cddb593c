"""pytest plugin for jumpstarter: ``pytest --exporter custom.yaml`` and ``def test_x(custom): ...``.

The hooks live in ``pytest_jumpstarter.plugin`` (registered through the
``pytest11`` entry point); ``mock_export`` is the one helper tests import.
"""

from pytest_jumpstarter.runtime import check_runtime

check_runtime()  # before anything imports jumpstarter's modules: is it this runtime?

from pytest_jumpstarter.mock import mock_export  # noqa: E402

__all__ = ["mock_export"]
