"""Importers of real data sets into the TaskRecord contract of `poserft data build` (docs/datasets.md)."""

from poserft.data.importers.common import ImportInputError
from poserft.data.importers.jsonl import import_jsonl
from poserft.data.importers.posescript import import_posescript
from poserft.data.importers.threedpw import import_3dpw

__all__ = ["ImportInputError", "import_3dpw", "import_jsonl", "import_posescript"]
