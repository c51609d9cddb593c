"""pytest plugin for jumpstarter: ``pytest --exporter custom.yaml`` and ``def test_x(custom): ...``.

The hooks live in ``pytest_jumpstarter.plugin`` (registered through the
``pytest11`` entry point); ``mock_export`` is the one helper tests import.
"""

from pytest_jumpstarter.mock import mock_export

__all__ = ["mock_export"]
