"""The dashboard's session cookie and its CSRF token (issue 14, item 2).

Signing in with an API key sets one cookie, signed with LEVQOR_SESSION_SECRET (itsdangerous, with a
timestamp so it expires). It holds a reference to the key (a managed key's principal id `key:<id>`, a
static key's `static:<digest prefix>`), never the secret, and a random nonce. Every request checks
the key again through the `Authenticator`, so revoking a key ends its sessions at once.

The CSRF token of a session is an HMAC of its nonce: a form carries it in a hidden field, and a POST
whose field does not match is refused (levqor/dashboard/guard.py), as is any cross-site POST.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.requests import HTTPConnection
from starlette.types import Scope

from levqor.config import Settings
from levqor.errors import Unauthorized
from levqor.resolvers.auth import Authenticator
from levqor.resolvers.context import Principal

COOKIE_NAME = "levqor_session"
COOKIE_PATH = "/dashboard"
SESSION_MAX_AGE_S = 8 * 3600  # a working day; sign in again after it
NONCE_BYTES = 16
MAX_COOKIE_CHARS = 1024  # ours are ~150; a longer one is not ours, and is not worth verifying
SIGNING_SALT = "levqor.dashboard.session"
CSRF_SALT = b"levqor.dashboard.csrf"
# The reference of development mode's caller, who needs no session but still posts forms.
DEV_REFERENCE = "dev"


@dataclass(frozen=True, slots=True)
class Session:
    key_reference: str  # `key:<id>` or `static:<digest prefix>`: which key signed in, never its secret
    nonce: str


class SessionCodec:
    """Signs and reads session cookies; one per app, safe to share between requests."""

    def __init__(self, settings: Settings) -> None:
        secret = settings.session_secret.get_secret_value() if settings.session_secret else None
        # Without a configured secret (development, or an app built in a test) each app has its own:
        # `levqor serve` sets one per start for all its processes (levqor/cli.py).
        self._secret = (secret or secrets.token_urlsafe(32)).encode()
        self._serializer = URLSafeTimedSerializer(self._secret, salt=SIGNING_SALT)
        self.max_age_s = SESSION_MAX_AGE_S

    def new(self, key_reference: str) -> Session:
        return Session(key_reference=key_reference, nonce=secrets.token_urlsafe(NONCE_BYTES))

    def encode(self, session: Session) -> str:
        return str(self._serializer.dumps([session.key_reference, session.nonce]))

    def decode(self, value: str) -> Session | None:
        """The session a cookie value holds; None when it is forged, altered, expired or not ours."""
        if len(value) > MAX_COOKIE_CHARS:
            return None
        try:
            loaded = self._serializer.loads(value, max_age=self.max_age_s)
        except BadSignature:  # SignatureExpired is one too
            return None
        if not (isinstance(loaded, list) and len(loaded) == 2 and all(isinstance(v, str) for v in loaded)):
            return None
        return Session(key_reference=loaded[0], nonce=loaded[1])

    def read(self, scope: Scope) -> Session | None:
        """The session of a request's cookie, if it carries a valid one."""
        value = HTTPConnection(scope).cookies.get(COOKIE_NAME)
        return self.decode(value) if value else None

    def csrf_token(self, session: Session | None) -> str:
        """The token a session's forms carry; development mode (no session) has one per app."""
        nonce = session.nonce if session is not None else DEV_REFERENCE
        return hmac.new(self._secret, CSRF_SALT + nonce.encode(), hashlib.sha256).hexdigest()

    def csrf_valid(self, session: Session | None, presented: str | None) -> bool:
        return presented is not None and hmac.compare_digest(self.csrf_token(session), presented)


# Where the request gateway leaves a dashboard request's session (None: none, or it has ended) and,
# when the session's key is no longer valid, why (shown on the sign-in page).
SESSION_STATE = "dashboard_session"
SESSION_ENDED_STATE = "dashboard_session_ended"


async def session_principal(
    scope: Scope, codec: SessionCodec, authenticator: Authenticator
) -> Principal | None:
    """The caller of a dashboard request by its session cookie, checked like a key on every
    request; None without a valid session."""
    state = scope.setdefault("state", {})
    session = codec.read(scope)
    state[SESSION_STATE] = None
    if session is None:
        return None
    try:
        principal = await authenticator.authenticate_reference(session.key_reference)
    except Unauthorized as exc:
        state[SESSION_ENDED_STATE] = exc.message
        return None
    state[SESSION_STATE] = session
    return principal
