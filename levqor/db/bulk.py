"""Executemany INSERTs and UPDATEs that send exactly what SQLAlchemy would send, with its per-row work
done once per batch.

`session.execute(statement, rows)` builds every row's parameters anew (`construct_params`) and runs
every parameter's bind processor on every value. For the rows of one group commit or one worker's
batch most values are None or the batch's shared `now`, and that work cost more CPU than the statement
itself. `BulkStatement` compiles the statement as SQLAlchemy compiles it for an executemany, takes that
compiled statement's own bind processors, and runs each processor once per distinct value in a run of
a parameter (a value that is the same object as the one above it reuses its processed form). The SQL
text and the parameters, and so the stored bytes, are those of the Core path
(tests/integration/test_bulk_insert.py holds it to that).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from weakref import WeakKeyDictionary

from sqlalchemy import Dialect, Table, UpdateBase, insert
from sqlalchemy.orm import Session

_UNSET = object()


@dataclass(frozen=True, slots=True)
class _Plan:
    """The statement of one dialect and how to bind a batch for it."""

    sql: str
    keys: tuple[str, ...]  # row keys in the order the DBAPI takes them
    names: tuple[str, ...] | None  # parameter names for a named paramstyle; None when positional
    processors: tuple[Callable[[Any], Any] | None, ...]
    sequence: Callable[[Sequence[Any]], Sequence[Any]]  # the dialect's positional parameter type

    def parameters(self, rows: Sequence[Mapping[str, Any]]) -> list[Any]:
        columns = [
            _processed([row[key] for row in rows], process)
            if process is not None
            else [row[key] for row in rows]
            for key, process in zip(self.keys, self.processors, strict=True)
        ]
        if self.names is None:
            sequence = self.sequence
            return [sequence(values) for values in zip(*columns, strict=True)]
        names = self.names
        return [dict(zip(names, values, strict=True)) for values in zip(*columns, strict=True)]


def _processed(values: list[Any], process: Callable[[Any], Any]) -> list[Any]:
    """`process` applied to each value, called again only when a value is not the one above it."""
    out = []
    last_in: Any = _UNSET
    last_out: Any = None
    for value in values:
        if value is not last_in:
            last_in, last_out = value, process(value)
        out.append(last_out)
    return out


class BulkStatement:
    """An executemany of `statement`, an INSERT or UPDATE whose bound parameters are exactly `keys`;
    every row names each of them."""

    def __init__(self, statement: UpdateBase, keys: Sequence[str], *, column_keys: bool = False) -> None:
        self.statement = statement
        self.keys = tuple(keys)
        self._column_keys = column_keys  # an INSERT of `keys` as columns, without naming bindparams
        self._plans: WeakKeyDictionary[Dialect, _Plan] = WeakKeyDictionary()

    def execute(self, session: Session, rows: Sequence[Mapping[str, Any]]) -> None:
        """Run for `rows` in the session's transaction (the Core path's errors, wrapped the same way)."""
        if not rows:
            return
        connection = session.connection()
        plan = self.plan(connection.dialect)
        connection.exec_driver_sql(plan.sql, plan.parameters(rows))

    def plan(self, dialect: Dialect) -> _Plan:
        found = self._plans.get(dialect)
        if found is None:
            found = self._plans[dialect] = self._compile(dialect)
        return found

    def _compile(self, dialect: Dialect) -> _Plan:
        name = getattr(self.statement.table, "name", "?")  # for the errors below
        options: dict[str, Any] = {"column_keys": list(self.keys)} if self._column_keys else {}
        compiled = self.statement.compile(dialect=dialect, for_executemany=True, **options)
        # What the Core path would add on its own (Python-side column defaults, expanded or literal
        # parameters) has no place here: refuse rather than bind something else.
        if compiled.insert_prefetch or compiled.literal_execute_params or compiled.post_compile_params:
            raise ValueError(f"{name}: the statement needs per-row work that BulkStatement skips")
        bind_names = tuple(compiled.positiontup or ()) if compiled.positional else tuple(compiled.binds)
        if sorted(bind_names) != sorted(self.keys):
            raise ValueError(f"{name}: the statement binds {bind_names}, not {self.keys}")
        processors: list[Callable[[Any], Any] | None] = []
        for key in bind_names:
            # What the compiled statement would run on this parameter: its type's processor for the
            # dialect (SQLAlchemy's public `TypeEngine.dialect_impl` and `bind_processor`).
            process = compiled.binds[key].type.dialect_impl(dialect).bind_processor(dialect)
            if process is not None and not callable(process):  # a tuple-valued parameter
                raise ValueError(f"{name}: {key} needs a processor per tuple element")
            processors.append(process)
        escaped = compiled.escaped_bind_names
        return _Plan(
            sql=compiled.string,
            keys=bind_names,
            names=None if compiled.positional else tuple(escaped.get(key, key) for key in bind_names),
            processors=tuple(processors),
            sequence=dialect.execute_sequence_format,
        )


class BulkInsert(BulkStatement):
    """An executemany INSERT of `columns` into `table`; every row names each of `columns`."""

    def __init__(self, table: Table, columns: Sequence[str]) -> None:
        super().__init__(insert(table), columns, column_keys=True)
        self.table = table
        self.columns = self.keys
