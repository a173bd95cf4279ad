"""Which secrets sign a job's callbacks (CONTRACT.md §8, issue 11).

A job submitted with a managed key is signed with that key's webhook secret, and during the overlap
after a rotation with its previous one too: the Standard Webhooks spec lets `webhook-signature`
carry several space-separated signatures, and a receiver accepts the message when any one matches,
so it can switch secrets without losing a callback. Any other job (development mode, a static
`API_KEYS` key, a managed key made before webhook secrets existed) is signed with
`LEVQOR_WEBHOOK_SECRET`, when it is set.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlmodel import Session, col

from levqor.config import Settings
from levqor.db.models import ApiKey
from levqor.db.principals import managed_key_id
from levqor.resolvers.context import Principal
from levqor.resolvers.keys import previous_signs_until

_KEY_SECRETS = select(
    col(ApiKey.webhook_secret),
    col(ApiKey.webhook_secret_previous),
    col(ApiKey.webhook_secret_previous_until),
)


def signing_secrets(session: Session, signed_by: str | None, settings: Settings, now: datetime) -> list[str]:
    """The secrets that sign a callback of a job submitted by principal `signed_by` (a
    `Principal.id`) at the aware instant `now`, current first; empty when nothing can sign it.

    A revoked or expired key still signs: the callbacks of the jobs it submitted before are
    verified with the secret their receivers already hold."""
    key_id = managed_key_id(signed_by)
    if key_id is not None:
        row = session.execute(_KEY_SECRETS.where(col(ApiKey.id) == key_id)).first()
        if row is not None and row.webhook_secret is not None:
            found = [row.webhook_secret]
            if previous_signs_until(row.webhook_secret_previous, row.webhook_secret_previous_until, now):
                found.append(row.webhook_secret_previous)
            return found
    return [settings.webhook_secret] if settings.webhook_secret else []


def can_sign(principal: Principal, settings: Settings) -> bool:
    """Whether the callbacks of a job this caller submits now would be signed: what the
    authenticator learned of its key on this request, so intake reads nothing more."""
    return principal.has_webhook_secret or bool(settings.webhook_secret)
