"""GraphQL names of Python fields and arguments, converted once each.

Strawberry converts a Python name to its camelCase GraphQL name each time it needs it: for every
argument and input field of every request. The names are the schema's own, a fixed set, so each
conversion is kept (a `submitJob` converts a dozen; `python -m bench.inprocess --callgrind`).
"""

from __future__ import annotations

from strawberry.schema.name_converter import NameConverter


class CachedNameConverter(NameConverter):
    def __init__(self) -> None:
        super().__init__()
        self._converted: dict[str, str] = {}

    def apply_naming_config(self, name: str) -> str:
        converted = self._converted.get(name)
        if converted is None:
            # Only names the schema declares reach here, so the mapping stays small.
            converted = self._converted[name] = super().apply_naming_config(name)
        return converted
