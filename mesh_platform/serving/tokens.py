"""Who is calling: a signed token (JWT, RS256) verified against the keys the deployment provides.

The service trusts nothing a request says about its caller: no header, parameter or SQL names an
identity. A token carries the consumer domain (``mesh_domain``) and who in it (``sub``: the domain
itself or a person), with an expiry; it is verified against a JWKS file of public keys
(``MESH_SERVE_JWKS``, e.g. the identity provider's keys the deployment mounts). Expired, forged,
malformed or absent tokens are refused, as are tokens for a domain the mesh does not have.

For local use ``mesh tokens issue CONSUMER`` signs with a key of the mesh home
(``$MESH_HOME/serve/signing-key.pem``, created on first use, readable by its owner only) whose
public half is the default JWKS (``$MESH_HOME/serve/jwks.json``). Whoever can read that file can
mint tokens: in production the signing key belongs to the identity provider, not to the service.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

ISSUER = "mesh"
AUDIENCE = "mesh-serve"
ALGORITHMS = ["RS256"]  # fixed: a token cannot choose its own algorithm ("none", HS256 with the public key)
DEFAULT_TTL = 3600


class TokenRefused(PermissionError):
    """The request carries no valid token; the message says why, never what a valid one holds."""


@dataclass(frozen=True)
class Caller:
    domain: str  # the consumer domain every decision is made for
    subject: str  # the domain itself, or a person of it
    expires: int


def _folder(home: str) -> Path:
    return Path(home) / "serve"


def jwks_path(home: str) -> Path:
    """The JWKS the service verifies against: ``MESH_SERVE_JWKS``, or the mesh home's own."""
    configured = os.environ.get("MESH_SERVE_JWKS")
    return Path(configured) if configured else _folder(home) / "jwks.json"


def _ensure_local_key(home: str):
    """The mesh home's signing key (created once, 0600) and its JWKS beside it."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from jwt.algorithms import RSAAlgorithm

    folder = _folder(home)
    key_file = folder / "signing-key.pem"
    if not key_file.exists():
        folder.mkdir(parents=True, exist_ok=True)
        os.chmod(folder, 0o700)
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(pem)
    key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    jwks = folder / "jwks.json"
    public = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
    public.update({"kid": "mesh-local", "use": "sig", "alg": "RS256"})
    jwks.write_text(json.dumps({"keys": [public]}, indent=2))
    return key


def issue(home: str, domain: str, subject: str | None = None, ttl: int = DEFAULT_TTL, now: float | None = None) -> str:
    """A token for ``domain`` (and ``subject``, a person of it), signed with the mesh home's key."""
    import jwt

    key = _ensure_local_key(home)
    issued = int(now if now is not None else time.time())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": subject or domain, "mesh_domain": domain, "iat": issued, "exp": issued + int(ttl)}
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": "mesh-local"})


class Verifier:
    """Verifies bearer tokens against a JWKS file (re-read when it changes: keys rotate)."""

    def __init__(self, jwks_file: Path, domains: set[str]):
        self.jwks_file = Path(jwks_file)
        self.domains = domains
        self._keys: tuple[float, dict] | None = None

    def _key_set(self) -> dict:
        from jwt import PyJWKSet

        stamp = self.jwks_file.stat().st_mtime if self.jwks_file.exists() else -1.0
        if self._keys is None or self._keys[0] != stamp:
            if stamp < 0:
                raise TokenRefused(f"no keys to verify tokens with: {self.jwks_file} does not exist (set MESH_SERVE_JWKS)")
            keys = PyJWKSet.from_json(self.jwks_file.read_text())
            self._keys = (stamp, {k.key_id: k for k in keys.keys})
        return self._keys[1]

    def verify(self, header: str | None) -> Caller:
        import jwt

        if not header:
            raise TokenRefused("no token: send `Authorization: Bearer <token>` (`mesh tokens issue CONSUMER` locally)")
        scheme, _, token = header.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise TokenRefused("malformed Authorization header: expected `Bearer <token>`")
        token = token.strip()
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.PyJWTError:
            raise TokenRefused("malformed token") from None
        keys = self._key_set()
        key = keys.get(kid) if kid else (next(iter(keys.values())) if len(keys) == 1 else None)
        if key is None:
            raise TokenRefused("the token is signed with a key this deployment does not know")
        try:
            claims = jwt.decode(
                token, key.key, algorithms=ALGORITHMS, audience=AUDIENCE, issuer=ISSUER,
                options={"require": ["exp", "iat", "sub", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise TokenRefused("the token has expired: get a new one") from None
        except jwt.InvalidSignatureError:
            raise TokenRefused("the token's signature does not verify: it was not issued by this deployment") from None
        except jwt.PyJWTError as exc:
            raise TokenRefused(f"invalid token: {exc}") from None
        domain = claims.get("mesh_domain")
        if not isinstance(domain, str) or domain not in self.domains:
            raise TokenRefused(f"the token names no domain of this mesh ({domain!r})")
        return Caller(domain=domain, subject=str(claims["sub"]), expires=int(claims["exp"]))


__all__ = ["Caller", "TokenRefused", "Verifier", "issue", "jwks_path"]
