"""The service layer: plain async functions over a `Context`; no HTTP and no GraphQL in here."""

from levqor.resolvers.context import DEV_PRINCIPAL, Context, Principal, Scope

__all__ = ["DEV_PRINCIPAL", "Context", "Principal", "Scope"]
