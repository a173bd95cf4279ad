"""How a managed API key is named where a caller is recorded (`jobs.submitted_by`, a delivery's
`signed_by`, `Principal.id`): `key:<api key id>`."""

from __future__ import annotations

import uuid

MANAGED_PRINCIPAL_PREFIX = "key:"


def managed_principal_id(key_id: uuid.UUID | str) -> str:
    return f"{MANAGED_PRINCIPAL_PREFIX}{key_id}"


def managed_key_id(principal_id: str | None) -> uuid.UUID | None:
    """The managed key behind a principal id (`key:<uuid>`); None for any other caller."""
    if principal_id is None or not principal_id.startswith(MANAGED_PRINCIPAL_PREFIX):
        return None
    try:
        return uuid.UUID(principal_id.removeprefix(MANAGED_PRINCIPAL_PREFIX))
    except ValueError:
        return None
