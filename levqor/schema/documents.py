"""What a GraphQL document may cost before it runs: tokens, expanded size, depth and aliases.

Strawberry's own extensions do the work (`MaxTokensLimiter`, `ParserCache`, `QueryDepthLimiter`,
`MaxAliasesLimiter`, `ValidationCache`). One bound is Levqor's: the depth and alias rules, like any
rule that follows fragment spreads, walk a document's expansion, which fragments that each spread the
next twice make 2^n fields long in n lines. `ExpandedSizeLimit` measures the expansion in time linear
in the document, and a document over `MAX_EXPANDED_FIELDS` is refused without those rules running.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

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
    AddValidationRules,
    MaxAliasesLimiter,
    MaxTokensLimiter,
    ParserCache,
    QueryDepthLimiter,
    SchemaExtension,
    ValidationCache,
)

MAX_QUERY_DEPTH = 10
MAX_QUERY_TOKENS = 2_000
# Room for a batch of 25 aliased mutations; each root mutation field is charged to the rate limits.
MAX_ALIASES = 30
# Fields of a document with every fragment spread replaced by its fragment: what validation and
# execution walk. The largest document of the test suite has ~150; a 2^11 fragment bomb is over.
MAX_EXPANDED_FIELDS = 2_000
# Distinct query texts kept by each cache; bounded so unique documents cannot grow memory.
DOCUMENT_CACHE_ENTRIES = 256

EXPANDED_SIZE_MESSAGE = (
    f"the document expands to more than {MAX_EXPANDED_FIELDS} fields once its fragments are spread"
)

# Each limiter makes a new rule class when constructed, and the validation cache keys on the rule
# classes: built once, so every request's extensions share them and the cache hits.
LIMIT_RULES: list[type[ASTValidationRule]] = [
    *QueryDepthLimiter(max_depth=MAX_QUERY_DEPTH).validation_rules,
    *MaxAliasesLimiter(max_alias_count=MAX_ALIASES).validation_rules,
]


def expanded_field_count(document: DocumentNode, stop_above: int) -> int:
    """The number of fields the document's operations select once every fragment spread is replaced
    by its fragment, in time linear in the document: each fragment is counted once. Counts past
    `stop_above` are capped there plus one. A spread inside a fragment cycle (refused by the spec's
    NoFragmentCycles rule) or of an unknown fragment (KnownFragmentNames) counts nothing."""
    own = {
        definition.name.value: _own_fields_and_spreads(definition.selection_set)
        for definition in document.definitions
        if isinstance(definition, FragmentDefinitionNode)
    }
    expanded: dict[str, int] = {}
    for root in own:
        # Depth-first, children before parents, without recursion: a chain of fragments may be
        # hundreds long. `position` is how many of the fragment's spreads have been looked at.
        stack: list[tuple[str, int]] = [(root, 0)]
        on_stack = {root}
        while stack:
            name, position = stack[-1]
            fields, spreads = own[name]
            if position < len(spreads):
                stack[-1] = (name, position + 1)
                spread = spreads[position]
                if spread in own and spread not in expanded and spread not in on_stack:
                    stack.append((spread, 0))
                    on_stack.add(spread)
                continue
            total = fields + sum(expanded.get(spread, 0) for spread in spreads)
            expanded[name] = min(total, stop_above + 1)
            stack.pop()
            on_stack.discard(name)
    total = 0
    for definition in document.definitions:
        if isinstance(definition, OperationDefinitionNode):
            fields, spreads = _own_fields_and_spreads(definition.selection_set)
            total += fields + sum(expanded.get(spread, 0) for spread in spreads)
    return min(total, stop_above + 1)


def _own_fields_and_spreads(selection_set: SelectionSetNode) -> tuple[int, list[str]]:
    """Fields under `selection_set` (inline fragments included, at any depth) and the names of the
    fragments it spreads, once per spread."""
    fields = 0
    spreads: list[str] = []
    pending = [selection_set]
    while pending:
        for selection in pending.pop().selections:
            if isinstance(selection, FieldNode):
                fields += 1
                if selection.selection_set is not None:
                    pending.append(selection.selection_set)
            elif isinstance(selection, InlineFragmentNode):
                pending.append(selection.selection_set)
            elif isinstance(selection, FragmentSpreadNode):
                spreads.append(selection.name.value)
    return fields, spreads


class OversizedDocument(ValidationRule):
    """The one rule a document over `MAX_EXPANDED_FIELDS` is validated with: it reports the bound."""

    def enter_document(self, node: DocumentNode, *_args: object) -> None:
        self.report_error(GraphQLError(EXPANDED_SIZE_MESSAGE))


class ExpandedSizeLimit(SchemaExtension):
    """Refuses a document whose expansion is over `MAX_EXPANDED_FIELDS` before any rule walks it:
    its validation rules become `OversizedDocument` alone. Listed before the validation cache."""

    def on_validate(self) -> Iterator[None]:
        context = self.execution_context
        document = context.graphql_document
        if document is not None and expanded_field_count(document, MAX_EXPANDED_FIELDS) > MAX_EXPANDED_FIELDS:
            context.validation_rules = (OversizedDocument,)
        yield


class ParsedDocuments(ParserCache):
    """`ParserCache`, except that a text that does not parse is left to Strawberry's own parse step:
    `ParserCache` raises out of its hook, and the syntax error would skip the operation hooks that
    give it its `extensions.code`. Such a text is parsed twice, within the token limit."""

    def on_parse(self) -> Iterator[None]:
        context = self.execution_context
        # Reported by Strawberry's parse, which runs when no document is set.
        with contextlib.suppress(GraphQLError):
            context.graphql_document = self.cached_parse_document(context.query, **context.parse_options)
        yield


def document_extensions() -> list[Callable[[], SchemaExtension]]:
    """The schema's document limits and caches, in the order their hooks must run: the token limit
    before the parse, the limit rules added before validation, the expansion measured before the
    cached validation runs any rule."""
    return [
        lambda: MaxTokensLimiter(max_token_count=MAX_QUERY_TOKENS),
        lambda: ParsedDocuments(maxsize=DOCUMENT_CACHE_ENTRIES),
        lambda: AddValidationRules(LIMIT_RULES),
        ExpandedSizeLimit,
        lambda: ValidationCache(maxsize=DOCUMENT_CACHE_ENTRIES),
    ]
