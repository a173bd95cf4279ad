"""What a GraphQL document may cost before it runs: tokens, expanded size, depth and aliases.

Strawberry's own extensions do the work (`ParserCache`, `QueryDepthLimiter`, `MaxAliasesLimiter`,
`ValidationCache`), through the two here, which subclass the caches: the token limit is set by the
parse's and the limit rules by the validation's (an extension more, such as `MaxTokensLimiter`,
costs 2-3 % of a `submitJob`: `python -m bench.inprocess --callgrind`).

One bound is Levqor's: the depth and alias rules, like any rule that follows fragment spreads, walk a
document's expansion, which fragments that each spread the next twice make 2^n fields long in n
lines; and the spec's OverlappingFieldsCanBeMerged compares the fields of one name pairwise.
`ExpandedSizeLimit` measures both in time linear in the document, and a document over
`MAX_EXPANDED_FIELDS` or `MAX_FIELDS_PER_KEY` is refused without those rules running.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from graphql import (
    ASTValidationRule,
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
    ValidationRule,
)
from strawberry.extensions import (
    MaxAliasesLimiter,
    ParserCache,
    QueryDepthLimiter,
    SchemaExtension,
    ValidationCache,
)

MAX_QUERY_DEPTH = 10
# Characters of a document's text, checked before the parse: the lexer reads ~5 MB/s (a 1 MiB string
# literal took 182 ms in `graphql.parse`), and values that large belong in the variables.
MAX_DOCUMENT_CHARS = 100_000
MAX_QUERY_TOKENS = 2_000
# Room for a batch of 25 aliased mutations; each root mutation field is charged to the rate limits.
MAX_ALIASES = 30
# Fields of a document's definitions with every fragment spread replaced by its fragment: what
# validation and execution walk; a fragment bomb of 10 levels (2^11 fields) is over it.
MAX_EXPANDED_FIELDS = 2_000
# What one `__schema` field counts as: answering it walks the whole schema (~5 ms for
# `{ __schema { types { fields { type { fields { name } } } } } }`, 18 ms for the full introspection
# query, `schema.execute` in-process), so a document holds two, not 29 aliased ones (85 ms).
SCHEMA_FIELD_WEIGHT = 500
# Fields of one response key in one selection set (fragments included), which validation compares
# pairwise: 480 `health { ok }` in one selection set took 0.93 s in `schema.execute` without it.
MAX_FIELDS_PER_KEY = 25
# Distinct query texts kept by each cache; bounded so unique documents cannot grow memory.
DOCUMENT_CACHE_ENTRIES = 256


# Each limiter makes a new rule class when constructed, and the validation cache keys on the rule
# classes: built once, so every request's extensions share them and the cache hits.
LIMIT_RULES: list[type[ASTValidationRule]] = [
    *QueryDepthLimiter(max_depth=MAX_QUERY_DEPTH).validation_rules,
    *MaxAliasesLimiter(max_alias_count=MAX_ALIASES).validation_rules,
]


@dataclass(frozen=True)
class DocumentCost:
    """What validating and executing a document walks, with every fragment spread replaced by its
    fragment; counts are capped a little over the bounds, as the bomb's grow as 2^n."""

    # Fields of every operation and fragment definition, spreads replaced by their fragments.
    expanded_fields: int
    # The most fields sharing one response key in one selection set: the spec's
    # OverlappingFieldsCanBeMerged rule compares them pairwise.
    fields_per_key: int


@dataclass
class _Level:
    """The fields and spreads of one selection set, its inline fragments merged in."""

    keys: Counter[str] = field(default_factory=Counter)
    spreads: list[str] = field(default_factory=list)


def document_cost(document: DocumentNode) -> DocumentCost:
    """The document's cost, in time linear in the document: each fragment is measured once. A
    spread inside a fragment cycle (refused by the spec's NoFragmentCycles rule) or of an unknown
    fragment (KnownFragmentNames) counts nothing here."""
    cap = max(MAX_EXPANDED_FIELDS, MAX_FIELDS_PER_KEY) + 1
    fragments = {
        definition.name.value: _fields_and_levels(definition.selection_set)
        for definition in document.definitions
        if isinstance(definition, FragmentDefinitionNode)
    }
    spreads_of = {
        name: [spread for level in levels for spread in level.spreads]
        for name, (_, levels) in fragments.items()
    }
    expanded: dict[str, int] = {}
    top_keys: dict[str, Counter[str]] = {}
    for root in fragments:
        if root in expanded:
            continue
        # Depth-first, spread fragments before the fragments spreading them, without recursion: a
        # chain of fragments may be hundreds long. `position` counts the spreads looked at.
        stack: list[tuple[str, int]] = [(root, 0)]
        on_stack = {root}
        while stack:
            name, position = stack[-1]
            fields, levels = fragments[name]
            spreads = spreads_of[name]
            if position < len(spreads):
                stack[-1] = (name, position + 1)
                spread = spreads[position]
                if spread in fragments and spread not in expanded and spread not in on_stack:
                    stack.append((spread, 0))
                    on_stack.add(spread)
                continue
            expanded[name] = min(cap, fields + sum(expanded.get(spread, 0) for spread in spreads))
            top_keys[name] = _merged_keys(levels[0], top_keys, cap)
            stack.pop()
            on_stack.discard(name)
    # Rules walk every definition, fragments included (the alias limit counts each fragment's
    # expansion on its own), so each definition's expansion counts.
    operations = [
        _fields_and_levels(definition.selection_set)
        for definition in document.definitions
        if isinstance(definition, OperationDefinitionNode)
    ]
    total = sum(expanded.values()) + sum(
        fields + sum(expanded.get(spread, 0) for level in levels for spread in level.spreads)
        for fields, levels in operations
    )
    if total > MAX_EXPANDED_FIELDS:  # refused already; the keys need not be counted
        return DocumentCost(expanded_fields=min(total, cap), fields_per_key=0)
    fields_per_key = max(
        (
            max(_merged_keys(level, top_keys, cap).values(), default=0)
            for _, levels in [*operations, *fragments.values()]
            for level in levels
        ),
        default=0,
    )
    return DocumentCost(expanded_fields=min(total, cap), fields_per_key=fields_per_key)


def _fields_and_levels(selection_set: SelectionSetNode) -> tuple[int, list[_Level]]:
    """The number of fields under `selection_set` at any depth (spreads not followed; `__schema`
    weighing `SCHEMA_FIELD_WEIGHT`) and its selection sets one by one, `selection_set` first."""
    fields = 0
    levels: list[_Level] = []
    pending = [selection_set]
    while pending:
        level = _Level()
        levels.append(level)
        same_level = [pending.pop()]
        while same_level:
            for selection in same_level.pop().selections:
                if isinstance(selection, FieldNode):
                    fields += SCHEMA_FIELD_WEIGHT if selection.name.value == "__schema" else 1
                    level.keys[(selection.alias or selection.name).value] += 1
                    if selection.selection_set is not None:
                        pending.append(selection.selection_set)
                elif isinstance(selection, InlineFragmentNode):
                    same_level.append(selection.selection_set)
                elif isinstance(selection, FragmentSpreadNode):
                    level.spreads.append(selection.name.value)
    return fields, levels


def _merged_keys(level: _Level, top_keys: dict[str, Counter[str]], cap: int) -> Counter[str]:
    """The response keys of a selection set with those its spreads bring in (what field
    collection merges), each count capped at `cap`."""
    keys = Counter(level.keys)
    for spread in level.spreads:
        for key, count in top_keys.get(spread, {}).items():
            keys[key] = min(cap, keys[key] + count)
    return keys


def refusal_rule(message: str) -> type[ASTValidationRule]:
    """A validation rule that reports `message` once: what a document over a bound is validated
    with, instead of rules that would walk it."""

    class Refusal(ValidationRule):
        def enter_document(self, node: DocumentNode, *_args: object) -> None:
            self.report_error(GraphQLError(message))

    return Refusal


TOO_MANY_FIELDS = refusal_rule(
    f"the document selects more than {MAX_EXPANDED_FIELDS} fields once its fragments are spread "
    f"(`__schema` counting as {SCHEMA_FIELD_WEIGHT})"
)
TOO_MANY_FIELDS_PER_KEY = refusal_rule(
    f"a selection set has more than {MAX_FIELDS_PER_KEY} fields of the same name or alias, "
    "its fragments included"
)


_costs: dict[str, DocumentCost] = {}


def cached_document_cost(query: str, document: DocumentNode) -> DocumentCost:
    """`document_cost`, measured once per query text (the parser cache hands back one document per
    text), for up to `DOCUMENT_CACHE_ENTRIES` texts."""
    cost = _costs.get(query)
    if cost is None:
        cost = document_cost(document)
        if len(_costs) >= DOCUMENT_CACHE_ENTRIES:
            _costs.pop(next(iter(_costs)))  # the oldest entry
        _costs[query] = cost
    return cost


class ExpandedSizeLimit(ValidationCache):
    """Strawberry's `ValidationCache`, with the depth and alias limits added to the rules and a
    document over `MAX_EXPANDED_FIELDS` or `MAX_FIELDS_PER_KEY` refused before any rule walks it: its
    validation rules become the one refusal rule."""

    def __init__(self) -> None:
        super().__init__(maxsize=DOCUMENT_CACHE_ENTRIES)

    def on_validate(self) -> Iterator[None]:
        context = self.execution_context
        context.validation_rules = (*context.validation_rules, *LIMIT_RULES)
        if context.graphql_document is not None and context.query is not None:
            cost = cached_document_cost(context.query, context.graphql_document)
            if cost.expanded_fields > MAX_EXPANDED_FIELDS:
                context.validation_rules = (TOO_MANY_FIELDS,)
            elif cost.fields_per_key > MAX_FIELDS_PER_KEY:
                context.validation_rules = (TOO_MANY_FIELDS_PER_KEY,)
        yield from super().on_validate()


class ParsedDocuments(ParserCache):
    """`ParserCache`, except that a text that does not parse is left to Strawberry's own parse step:
    `ParserCache` raises out of its hook, and the syntax error would skip the operation hooks that
    give it its `extensions.code`. Such a text is parsed twice, within the token limit."""

    def on_parse(self) -> Iterator[None]:
        context = self.execution_context
        # For Strawberry's own parse too, which reports a text that does not parse.
        context.parse_options["max_tokens"] = MAX_QUERY_TOKENS
        # Reported by Strawberry's parse, which runs when no document is set.
        with contextlib.suppress(GraphQLError):
            context.graphql_document = self.cached_parse_document(context.query, **context.parse_options)
        yield


def document_extensions() -> list[Callable[[], SchemaExtension]]:
    """The schema's document limits and caches."""
    return [lambda: ParsedDocuments(maxsize=DOCUMENT_CACHE_ENTRIES), ExpandedSizeLimit]
