"""Running the schema's extensions without paying for the lifecycle stages none of them hooks into.

Strawberry enters every stage (operation, parse, validate, execute) of every request through an
exit stack built from each extension's hooks, even when no extension has a hook for that stage.
Levqor's extensions hook the operation and the execution only (`levqor.schema.documents` does the
parse and validation from its cache in the operation hook), so the other stages are entered through
a context manager that does nothing.
"""

from __future__ import annotations

from contextlib import nullcontext
from functools import lru_cache
from typing import Any

from strawberry.extensions import SchemaExtension
from strawberry.extensions.runner import SchemaExtensionsRunner

# Usable with `with` and `async with`, as often as needed: Strawberry enters stages both ways.
_NO_HOOKS: nullcontext[None] = nullcontext()


@lru_cache(maxsize=64)  # one entry per distinct list of extension classes: a handful
def _hooks_stage(extension_types: tuple[type[SchemaExtension], ...], hook_name: str) -> bool:
    default = getattr(SchemaExtension, hook_name)
    return any(getattr(extension_type, hook_name) is not default for extension_type in extension_types)


class LeanExtensionsRunner(SchemaExtensionsRunner):
    def _has_hook(self, hook_name: str) -> bool:
        return _hooks_stage(tuple(type(extension) for extension in self.extensions), hook_name)

    def parsing(self) -> Any:
        return super().parsing() if self._has_hook("on_parse") else _NO_HOOKS

    def validation(self) -> Any:
        return super().validation() if self._has_hook("on_validate") else _NO_HOOKS
