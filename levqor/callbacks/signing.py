"""Standard Webhooks signatures (https://www.standardwebhooks.com/), made by `standardwebhooks`.

Each secret that signs adds one `v1,<base64 HMAC-SHA256>` to `webhook-signature`, space-separated as
the spec allows, so during a rotation's overlap a receiver holding either secret verifies the call.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import datetime

from standardwebhooks import Webhook

from levqor import __version__

USER_AGENT = f"Levqor-Webhooks/{__version__}"


@functools.lru_cache(maxsize=256)
def _signer(secret: str) -> Webhook:
    return Webhook(secret)


def signed_headers(secrets: Sequence[str], *, webhook_id: str, body: bytes, at: datetime) -> dict[str, str]:
    """The headers of one attempt: the spec's three, signed with each of `secrets` at `at`."""
    if not secrets:
        raise ValueError("nothing to sign with")
    signature = " ".join(_signer(secret).sign(webhook_id, at, body) for secret in secrets)
    return {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "webhook-id": webhook_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": signature,
    }
