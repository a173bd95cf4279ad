"""Compiled plans: operations the server has seen before, executed without the general executor.

Clients send the same few documents over and over with new variables (issue 2, `submitJob`
throughput). For a document already parsed and validated (`levqor.schema.documents`), a plan is
compiled once per query text and operation name: the root fields with their resolvers, and for each
object below them the attribute fields to read and the schema's types to complete them with. Running
a plan skips graphql-core's per-request field collection, resolver wrapping and type dispatch, the
technique graphql-jit calls compiled queries.

Only a safe subset compiles; `operation_plan` answers None for anything else and the request takes
the general path. The subset: one operation, a query or mutation, no fragments and no directives,
distinct response keys, no field middleware, and below the root only plain attribute fields
(Strawberry fields without a resolver, permissions or extensions) or `__typename`. Everything a client
can see is computed by graphql-core's and Strawberry's own functions (variable and argument coercion,
the resolver wrapper, `coerce_output_value`, `located_error`, error collection), so a plan answers
exactly what the general path would; tests/integration/test_graphql_plans.py checks it, document by
document.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from graphql import (
    DocumentNode,
    ExecutionResult,
    FieldNode,
    GraphQLError,
    GraphQLField,
    GraphQLLeafType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLOutputType,
    GraphQLSchema,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    TypeNameMetaFieldDef,
    get_argument_values,
    get_variable_values,
    is_leaf_type,
    is_list_type,
    is_non_null_type,
    is_object_type,
    located_error,
)
from graphql.execution.executor import CollectedErrors, Executor
from graphql.pyutils import Path, Undefined, gather_with_cancel, is_iterable
from graphql.type.definition import GraphQLResolveInfoHelpers
from strawberry.execution import optimized_is_awaitable
from strawberry.schema import Schema
from strawberry.schema.schema import _OperationContextAwareGraphQLResolveInfo
from strawberry.types.field import StrawberryField

from levqor.schema.documents import REQUEST_RULES, prepared_document
from levqor.schema.errors import client_errors
from levqor.schema.ratelimit import charge_mutation_fields

# Distinct (query text, operation name) pairs whose plan (or refusal) is kept; bounded, as the
# document cache is, against a client sending unique documents.
PLAN_CACHE_ENTRIES = 256
# graphql-core's default cap on variable coercion errors, which Strawberry keeps.
MAX_COERCION_ERRORS = 50
# Strawberry's name for the field definition behind a GraphQL field.
_DEFINITION = "strawberry-definition"

# Completes a resolved value for one position of the response; raises what graphql-core would.
Complete = Callable[["_Run", Any, Path], Any]


class _Run:
    """One execution of a plan: its variables, its context and the errors collected so far."""

    __slots__ = ("background", "context", "errors", "helpers", "variables")

    def __init__(self, context: Any, variables: Any) -> None:
        self.context = context
        self.variables = variables
        self.errors = CollectedErrors()
        self.background: set[asyncio.Future[Any]] = set()
        self.helpers = GraphQLResolveInfoHelpers(gather=self.gather, track=self.track)

    def field_error(self, raw: Exception, nodes: list[FieldNode], path: Path, nullable: bool) -> None:
        """graphql-core's `handle_field_error`: a non-null position passes the error to its parent."""
        error = located_error(raw, nodes, path.as_list())
        if not nullable:
            raise error
        self.errors.add(error, path)

    @staticmethod
    def gather(values: Sequence[Awaitable[Any]]) -> Awaitable[list[Any]]:
        return gather_with_cancel(*values)

    def track(self, values: Sequence[Any]) -> None:
        # As the executor does: awaitables a resolver hands over are settled in the background.
        awaitables = [value for value in values if optimized_is_awaitable(value)]
        if awaitables:
            future = asyncio.gather(*awaitables, return_exceptions=True)
            self.background.add(future)
            future.add_done_callback(self.background.discard)


@dataclass(frozen=True, slots=True)
class _AttributeField:
    """A field below the root: an attribute of the parent object (or its type name), completed."""

    key: str
    attribute: str | None  # None for `__typename`
    type_name: str  # the parent's
    nodes: list[FieldNode]
    nullable: bool
    complete: Complete

    def execute(self, run: _Run, source: Any, path: Path | None) -> Any:
        field_path = Path(path, self.key, self.type_name)
        try:
            value = self.type_name if self.attribute is None else getattr(source, self.attribute)
            return self.complete(run, value, field_path)
        except Exception as raw:
            run.field_error(raw, self.nodes, field_path, self.nullable)
            return None


@dataclass(frozen=True, slots=True)
class _RootField:
    """A root field: Strawberry's resolver wrapper, given a resolve info as graphql-core builds it."""

    key: str
    field: GraphQLField
    parent: GraphQLObjectType
    nodes: list[FieldNode]
    nullable: bool
    complete: Complete

    def execute(self, run: _Run, plan: OperationPlan, root_value: Any) -> Any:
        path = Path(None, self.key, self.parent.name)
        node = self.nodes[0]
        info = _OperationContextAwareGraphQLResolveInfo(
            node.name.value,
            self.nodes,
            self.field.type,
            self.parent,
            path,
            plan.schema,
            {},  # fragments: a plan has none
            root_value,
            plan.operation,
            run.variables.coerced,
            run.context,
            optimized_is_awaitable,
            None,  # abort signal: Strawberry sets none
            run.helpers,
            None,  # type: ignore[arg-type]  # operation extensions: the request has none, as Strawberry passes it
        )
        try:
            args = (
                get_argument_values(self.field, node, run.variables)
                if self.field.args or node.arguments
                else {}
            )
            result = self.field.resolve(root_value, info, **args)  # type: ignore[misc]
            if optimized_is_awaitable(result):
                return self._complete_later(run, result, path)
            return self.complete(run, result, path)
        except Exception as raw:
            run.field_error(raw, self.nodes, path, self.nullable)
            return None

    async def _complete_later(self, run: _Run, result: Awaitable[Any], path: Path) -> Any:
        try:
            return self.complete(run, await result, path)
        except Exception as raw:
            run.field_error(raw, self.nodes, path, self.nullable)
            return None


@dataclass(frozen=True, slots=True)
class OperationPlan:
    """One operation of one document, ready to run with any variables."""

    schema: GraphQLSchema
    document: DocumentNode
    operation: OperationDefinitionNode
    operation_name: str | None
    root_fields: tuple[_RootField | _AttributeField, ...]

    @property
    def is_mutation(self) -> bool:
        return self.operation.operation == OperationType.MUTATION

    async def run(self, context: Any, query: str, variables: dict[str, Any] | None) -> ExecutionResult:
        """The result the general path would give: mutation fields charged first, then the
        execution, then the errors as the client sees them."""
        result = await charge_mutation_fields(context, self.document, query, self.operation_name)
        if result is None:
            try:
                result = await self._execute(context, variables)
            except Exception as exc:  # as Strawberry's `Schema.execute` turns it into a result
                error = exc if isinstance(exc, GraphQLError) else GraphQLError(str(exc), original_error=exc)
                result = ExecutionResult(data=None, errors=[error])
        if result.errors:
            result.errors = client_errors(result.errors, context)
        return result

    async def _execute(self, context: Any, raw_variables: dict[str, Any] | None) -> ExecutionResult:
        variables = get_variable_values(
            self.schema,
            self.operation.variable_definitions or (),
            raw_variables or {},
            max_errors=MAX_COERCION_ERRORS,
        )
        if isinstance(variables, list):
            return ExecutionResult(data=None, errors=variables)
        run = _Run(context, variables)
        try:
            if self.is_mutation:
                data = await self._execute_serially(run)
            else:
                data = await self._execute_in_parallel(run)
        except GraphQLError as error:  # a non-null root field failed: no data at all
            run.errors.add(error, None)
            return ExecutionResult(data=None, errors=run.errors.errors)
        return ExecutionResult(data=data, errors=run.errors.errors or None)

    async def _execute_serially(self, run: _Run) -> dict[str, Any]:
        # Mutations: each root field finishes before the next one starts (the spec's
        # "ExecuteSelectionSet ... serially").
        data: dict[str, Any] = {}
        for field in self.root_fields:
            value = self._execute_root(run, field)
            if optimized_is_awaitable(value):
                value = await value
            data[field.key] = value
        return data

    async def _execute_in_parallel(self, run: _Run) -> dict[str, Any]:
        # As graphql-core's `execute_fields`: every resolver is called, then their awaitables are
        # awaited together (alone, when there is one).
        data: dict[str, Any] = {}
        pending: list[str] = []
        try:
            for field in self.root_fields:
                value = self._execute_root(run, field)
                data[field.key] = value
                if optimized_is_awaitable(value):
                    pending.append(field.key)
        except Exception:
            for key in pending:
                run.track([data[key]])
            raise
        if len(pending) == 1:
            data[pending[0]] = await data[pending[0]]
        elif pending:
            values = await gather_with_cancel(*(data[key] for key in pending))
            data.update(zip(pending, values, strict=True))
        return data

    def _execute_root(self, run: _Run, field: _RootField | _AttributeField) -> Any:
        if isinstance(field, _RootField):
            return field.execute(run, self, None)
        return field.execute(run, None, None)


def operation_plan(schema: Schema, query: str, operation_name: str | None) -> OperationPlan | None:
    """The plan for this operation of this text, or None when it must take the general path (it
    does not parse or validate, or is outside the subset a plan covers)."""
    return _plan_of_text(schema, query, operation_name)


@lru_cache(maxsize=PLAN_CACHE_ENTRIES)
def _plan_of_text(schema: Schema, query: str, operation_name: str | None) -> OperationPlan | None:
    prepared = prepared_document(schema._schema, query, REQUEST_RULES)
    if prepared is None or prepared[1] or not _runs_plain(schema):
        return None
    return compile_operation(schema._schema, prepared[0], operation_name)


def _runs_plain(schema: Schema) -> bool:
    """No schema directives and no extension wrapping every resolver (field middleware)."""
    if schema.directives:
        return False
    return not any(extension._implements_resolve() for extension in schema.get_extensions())


def compile_operation(
    schema: GraphQLSchema, document: DocumentNode, operation_name: str | None
) -> OperationPlan | None:
    """A plan for a valid document's operation, or None outside the subset."""
    operations = [node for node in document.definitions if isinstance(node, OperationDefinitionNode)]
    if len(operations) != len(document.definitions):
        return None  # fragment definitions
    if operation_name is None:
        if len(operations) != 1:
            return None
        operation = operations[0]
    else:
        named = [node for node in operations if node.name and node.name.value == operation_name]
        if len(named) != 1:
            return None
        operation = named[0]
    if operation.operation not in (OperationType.QUERY, OperationType.MUTATION) or operation.directives:
        return None
    if any(variable.directives for variable in operation.variable_definitions or ()):
        return None
    root_type = schema.get_root_type(operation.operation)
    if root_type is None:
        return None
    nodes = _field_nodes(operation.selection_set)
    if nodes is None:
        return None
    root_fields: list[_RootField | _AttributeField] = []
    for node in nodes:
        root_field = _root_field(schema, root_type, node)
        if root_field is None:
            return None
        root_fields.append(root_field)
    # The operation's own name, as the general path hands it to the rate limit and the executor.
    name = operation.name.value if operation.name else None
    return OperationPlan(schema, document, operation, name, tuple(root_fields))


def _field_nodes(selection_set: SelectionSetNode | None) -> list[FieldNode] | None:
    """The fields of a selection set when they are plain: no fragments, no directives, and one
    field per response key (so no merging of fields)."""
    if selection_set is None:
        return None
    fields: list[FieldNode] = []
    keys: set[str] = set()
    for selection in selection_set.selections:
        if not isinstance(selection, FieldNode) or selection.directives:
            return None
        key = (selection.alias or selection.name).value
        if key in keys:
            return None
        keys.add(key)
        fields.append(selection)
    return fields


def _root_field(
    schema: GraphQLSchema, root_type: GraphQLObjectType, node: FieldNode
) -> _RootField | _AttributeField | None:
    key = (node.alias or node.name).value
    if node.name.value == "__typename":
        return _attribute_field(schema, root_type, node)
    field = root_type.fields.get(node.name.value)
    if field is None or field.resolve is None:
        return None
    complete = _completion(schema, field.type, node, f"{root_type.name}.{node.name.value}")
    if complete is None:
        return None
    return _RootField(key, field, root_type, [node], not is_non_null_type(field.type), complete)


def _attribute_field(
    schema: GraphQLSchema, parent: GraphQLObjectType, node: FieldNode
) -> _AttributeField | None:
    key = (node.alias or node.name).value
    name = node.name.value
    if name == "__typename":
        field, attribute = TypeNameMetaFieldDef, None
    else:
        field = parent.fields.get(name)
        attribute = _attribute_of(field)
        if attribute is None or node.arguments:
            return None
    complete = _completion(schema, field.type, node, f"{parent.name}.{name}")
    if complete is None:
        return None
    return _AttributeField(key, attribute, parent.name, [node], not is_non_null_type(field.type), complete)


def _attribute_of(field: GraphQLField | None) -> str | None:
    """The Python attribute a field reads, when it is a plain attribute field: no resolver, no
    permission classes or field extensions, Strawberry's resolver being its basic one (no exception
    handlers), and the default resolver `getattr`."""
    if field is None or field.args or field.resolve is None:
        return None
    definition = (field.extensions or {}).get(_DEFINITION)
    if not isinstance(definition, StrawberryField) or not definition.is_basic_field:
        return None
    if getattr(field.resolve, "__name__", "") != "_get_basic_result":
        return None
    if definition.default_resolver is not getattr:
        return None
    return definition.python_name


def _completion(
    schema: GraphQLSchema, type_: GraphQLOutputType, node: FieldNode, field_name: str
) -> Complete | None:
    """graphql-core's `complete_value` for one type, decided once; None for types a plan does not
    complete (abstract types, objects with `is_type_of`, lists of async iterables are never met)."""
    if is_non_null_type(type_):
        assert isinstance(type_, GraphQLNonNull)
        inner = _completion(schema, type_.of_type, node, field_name)
        return None if inner is None else _non_null(inner, field_name)
    if is_list_type(type_):
        assert isinstance(type_, GraphQLList)
        item = _completion(schema, type_.of_type, node, field_name)
        if item is None:
            return None
        return _list(item, not is_non_null_type(type_.of_type), [node], field_name)
    if is_leaf_type(type_):
        return _leaf(type_)
    if is_object_type(type_):
        assert isinstance(type_, GraphQLObjectType)
        if type_.is_type_of is not None:
            return None
        nodes = _field_nodes(node.selection_set)
        if nodes is None:
            return None
        fields = []
        for child in nodes:
            field = _attribute_field(schema, type_, child)
            if field is None:
                return None
            fields.append(field)
        return _object(tuple(fields))
    return None


def _non_null(inner: Complete, field_name: str) -> Complete:
    message = f"Cannot return null for non-nullable field {field_name}."

    def complete(run: _Run, value: Any, path: Path) -> Any:
        if isinstance(value, Exception):
            raise value
        completed = inner(run, value, path)
        if completed is None:
            raise TypeError(message)
        return completed

    return complete


def _list(item: Complete, item_nullable: bool, nodes: list[FieldNode], field_name: str) -> Complete:
    message = f"Expected Iterable, but did not find one for field '{field_name}'."

    def complete(run: _Run, value: Any, path: Path) -> Any:
        if isinstance(value, Exception):
            raise value
        if value is None or value is Undefined:
            return None
        if not is_iterable(value):
            raise GraphQLError(message)
        completed: list[Any] = []
        for index, element in enumerate(value):
            item_path = path.add_key(index, None)
            try:
                completed.append(item(run, element, item_path))
            except Exception as raw:
                run.field_error(raw, nodes, item_path, item_nullable)
                completed.append(None)
        return completed

    return complete


def _leaf(type_: GraphQLLeafType) -> Complete:
    coerce = Executor.complete_leaf_value

    def complete(run: _Run, value: Any, path: Path) -> Any:
        if isinstance(value, Exception):
            raise value
        if value is None or value is Undefined:
            return None
        return coerce(type_, value)

    return complete


def _object(fields: tuple[_AttributeField, ...]) -> Complete:
    def complete(run: _Run, value: Any, path: Path) -> Any:
        if isinstance(value, Exception):
            raise value
        if value is None or value is Undefined:
            return None
        return {field.key: field.execute(run, value, path) for field in fields}

    return complete


__all__ = ["OperationPlan", "compile_operation", "operation_plan"]
