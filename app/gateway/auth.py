"""JWT checks at the edge: every JWT failure is a 401 problem with a specific code."""

from functools import wraps

from flask_jwt_extended import decode_token, get_jwt, verify_jwt_in_request

from app.accounts import interface as accounts
from app.errors import ApiError, problem
from app.extensions import jwt

BEARER = [{"bearerAuth": []}]


def guest_subject(token: str) -> str:
    """The subject of a valid guest access token (as sent in X-Guest-Token); 400 otherwise.

    `decode_token` checks the signature and the claims only, not the revocation list that
    every bearer token meets: checked here, so that a logged-out guest's cart cannot be merged."""
    try:
        claims = decode_token(token)
    except Exception:
        claims = {}
    subject = claims.get("sub", "")
    if claims.get("type") != "access" or "guest" not in (claims.get("roles") or ()) or not subject.startswith("guest:"):
        raise ApiError(400, "guest_token_invalid", "The guest token is invalid or expired.")
    if accounts.is_token_revoked(claims=accounts.TokenClaims.of(claims)):
        raise ApiError(400, "guest_token_invalid", "The guest token has been revoked (the guest logged out).")
    return subject


def roles_required(*roles: str):
    """Allow the request only with a valid access token carrying one of `roles`."""

    def decorator(view):
        @wraps(view)
        def wrapper(*args, **kwargs):
            verify_jwt_in_request()
            if not set(roles) & set(get_jwt().get("roles") or ()):
                raise ApiError(403, "forbidden", f"This needs the role {' or '.join(roles)}.")
            return view(*args, **kwargs)

        return wrapper

    return decorator


signed_in = roles_required("customer", "admin")  # a registered user's token (not a guest's)
admin_only = roles_required("admin")


@jwt.token_in_blocklist_loader
def _is_revoked(header: dict, payload: dict) -> bool:
    return accounts.is_token_revoked(claims=accounts.TokenClaims.of(payload))


@jwt.unauthorized_loader
def _missing_token(reason: str):
    return problem(
        401, "token_missing", "An access token is required (Authorization: Bearer ...).", headers=_challenge()
    )


@jwt.invalid_token_loader
def _invalid_token(reason: str):
    return problem(401, "token_invalid", f"The access token is invalid: {reason}.", headers=_challenge())


@jwt.expired_token_loader
def _expired_token(header: dict, payload: dict):
    return problem(401, "token_expired", "The access token has expired.", headers=_challenge())


@jwt.revoked_token_loader
def _revoked_token(header: dict, payload: dict):
    return problem(401, "token_revoked", "The access token has been revoked.", headers=_challenge())


@jwt.needs_fresh_token_loader
def _stale_token(header: dict, payload: dict):
    return problem(401, "token_not_fresh", "This needs a fresh login.", headers=_challenge())


@jwt.user_lookup_error_loader
def _unknown_user(header: dict, payload: dict):
    return problem(401, "token_invalid", "The token's subject is unknown.", headers=_challenge())


def _challenge() -> dict[str, str]:
    return {"WWW-Authenticate": 'Bearer realm="storefront"'}
