"""GraphQL names of Python fields and arguments, converted once each.

Strawberry turns a Python name into its camelCase GraphQL name every time it needs it, which is for
every argument and input field of every request (to find the argument's value). The names are the
schema's own, a fixed set, so each conversion is kept.
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
            converted = super().apply_naming_config(name)
            # Only names the schema declares reach here, so the mapping stays small. Config built
            # with `auto_camel_case` sets that flag before the first name is converted.
            self._converted[name] = converted
        return converted
