"""The site's admin token: constant-time checks of ``Authorization: Bearer <token>``, and the
read-only preview keys that let a browser open a draft without carrying the admin token."""
from __future__ import annotations

import hashlib
import hmac

import falcon


class TokenAuth:
    def __init__(self, token: str):
        if not token:
            raise ValueError("the admin token is empty")
        self._token = token.encode("utf-8")
        self._header = b"Bearer " + self._token  # the header as clients send it, for the common case

    def check(self, authorization: str | None) -> bool:
        """True when the header carries the admin token. Compares in constant time."""
        if not authorization:
            return False
        # the usual form, compared whole (constant time for a header of the right length); any other
        # spelling (bearer, extra spaces) is parsed below
        if hmac.compare_digest(authorization.encode("latin-1", "replace"), self._header):
            return True
        scheme, _, credentials = authorization.strip().partition(" ")
        if scheme.lower() != "bearer":
            return False
        # WSGI hands headers over as latin-1 text; compare the bytes the client actually sent
        return hmac.compare_digest(credentials.strip().encode("latin-1", "replace"), self._token)

    def require(self, req: falcon.Request):
        if not self.check(req.get_header("Authorization")):
            raise falcon.HTTPUnauthorized(
                description="this endpoint needs the site's admin token (Authorization: Bearer <token>)",
                challenges=["Bearer"])

    def preview_key(self, slug: str) -> str:
        """A key valid for one slug's preview only: it reveals nothing about the admin token."""
        return hmac.new(self._token, b"preview:" + slug.encode("utf-8"), hashlib.sha256).hexdigest()[:32]

    def check_preview_key(self, slug: str, key: str | None) -> bool:
        if not key:
            return False
        return hmac.compare_digest(key.encode("latin-1", "replace"), self.preview_key(slug).encode())
