"""Shared extension objects, created unbound and initialised by `create_app`."""

import functools

import marshmallow as ma
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from apispec import BasePlugin
from flask_caching import Cache
from flask_cors import CORS
from flask_jwt_extended import JWTManager
from flask_jwt_extended.config import config as jwt_config
from flask_jwt_extended.default_callbacks import default_decode_key_callback
from flask_jwt_extended.tokens import _decode_jwt
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_migrate import Migrate
from flask_smorest import Api, Blueprint
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from webargs.flaskparser import FlaskParser

from app.errors import PROBLEM_MIMETYPE, ApiError, handle_http_exception
from app.rate_limits import ONE_TRIP_FIXED_WINDOW

MAX_PAGE = 10_000  # the deepest page of a listing


class ProblemSchema(ma.Schema):
    """The `application/problem+json` body every error response has (documentation only).

    Problems may carry extension members (RFC 9457), so the schema admits more properties;
    subclasses document the extensions of a route's errors (e.g. `productId`).
    """

    class Meta:
        unknown = ma.INCLUDE

    type = ma.fields.String(metadata={"example": "urn:storefront:problem:product_not_found"})
    title = ma.fields.String(metadata={"example": "Not Found"})
    status = ma.fields.Integer(metadata={"example": 404})
    detail = ma.fields.String(metadata={"example": "No product with productId '42'."})
    instance = ma.fields.String(metadata={"example": "/v1/products/42"})
    code = ma.fields.String(metadata={"description": "Machine-readable error code", "example": "product_not_found"})
    errors = ma.fields.Dict(
        keys=ma.fields.String(),
        values=ma.fields.List(ma.fields.String()),
        metadata={
            "description": "Per-field messages (validation errors only)",
            "example": {"price": ["Not a valid price."]},
        },
    )


class ProblemResponses(BasePlugin):
    """flask-smorest registers a response component per HTTP status (and DEFAULT_ERROR), each
    with ERROR_SCHEMA as an `application/json` body; those with a body are its error responses,
    which this API sends as problem+json, so that is what they say."""

    def response_helper(self, response: dict, **kwargs) -> dict:
        content = response.get("content", {})
        if "application/json" in content:
            content[PROBLEM_MIMETYPE] = content.pop("application/json")
        return response


class StorefrontApi(Api):
    ERROR_SCHEMA = ProblemSchema

    def __init__(self, *args, **kwargs):
        super().__init__(*args, spec_kwargs={"extra_plugins": [ProblemResponses()]}, **kwargs)

    def handle_http_exception(self, error):
        return handle_http_exception(error)


class ValidationParser(FlaskParser):
    """Validation errors answer 400, as the original NestJS gateway's did."""

    DEFAULT_VALIDATION_STATUS = 400


class ApiBlueprint(Blueprint):
    ARGUMENTS_PARSER = ValidationParser()
    PAGINATION_ARGUMENTS_PARSER = ValidationParser()

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # flask-smorest has no public hook for this; test_the_openapi_document_describes_the_size_limits
        # (tests/integration/test_request_limits.py) fails on an upgrade that drops the list.
        self._prepare_doc_cbks.append(_document_size_limits)

    def problem_response(self, status: int, description: str, schema: type[ProblemSchema] = ProblemSchema):
        """Document an error outcome of a view (its body is a problem+json document)."""
        return self.alt_response(status, schema=schema, description=description, content_type=PROBLEM_MIMETYPE)

    def paginate(self, *args, **kwargs):
        """flask-smorest's pagination, with a deepest page: `page` has no upper bound of its
        own, and an offset past what the stores count in (PostgreSQL's bigint) would be a 500."""
        paginated = super().paginate(*args, **kwargs)

        def decorator(view):
            @functools.wraps(view)
            def within_max_page(*view_args, pagination_parameters, **view_kwargs):
                if pagination_parameters.page > MAX_PAGE:
                    raise ApiError(
                        400,
                        "validation_error",
                        "The request has invalid fields.",
                        errors={"page": [f"Must be at most {MAX_PAGE}; narrow the listing instead."]},
                    )
                return view(*view_args, pagination_parameters=pagination_parameters, **view_kwargs)

            return paginated(within_max_page)

        return decorator


def _document_size_limits(doc: dict, doc_info: dict, **kwargs) -> dict:
    """Every operation may answer the size limits of app/gateway/request_limits.py: 414 and
    431, and 413 when it takes a body."""
    responses = doc.setdefault("responses", {})
    if "requestBody" in doc:
        responses.setdefault(413, "REQUEST_ENTITY_TOO_LARGE")
    responses.setdefault(414, "REQUEST_URI_TOO_LONG")
    responses.setdefault(431, "REQUEST_HEADER_FIELDS_TOO_LARGE")
    return doc


class ProductProblemSchema(ProblemSchema):
    """A problem about one product."""

    product_id = ma.fields.String(data_key="productId", metadata={"example": "42"})


class DecodeOnceJWTManager(JWTManager):
    """flask-jwt-extended reads a token's claims without verifying them (to pick the key by
    them) and then decodes it again to verify it. With the default key, which depends on
    neither, the claims are decoded once: the verifying decode alone. Any failure goes through
    the library's own path again, so that every 401 says exactly what it always said.

    The library offers no public hook for it: this overrides its `_decode_jwt_from_config`
    and calls its `_decode_jwt`. tests/integration/test_rate_limit_round_trips.py counts
    PyJWT's decodes per request and fails on an upgrade that stops calling the override."""

    def _decode_jwt_from_config(self, encoded_token: str, csrf_value=None, allow_expired: bool = False) -> dict:
        if self._decode_key_callback is not default_decode_key_callback:
            return super()._decode_jwt_from_config(encoded_token, csrf_value, allow_expired)
        try:
            return _decode_jwt(
                algorithms=jwt_config.decode_algorithms,
                allow_expired=allow_expired,
                audience=jwt_config.decode_audience,
                csrf_value=csrf_value,
                encoded_token=encoded_token,
                identity_claim_key=jwt_config.identity_claim_key,
                issuer=jwt_config.decode_issuer,
                leeway=jwt_config.leeway,
                secret=jwt_config.decode_key,
                verify_aud=jwt_config.decode_audience is not None,
                verify_sub=jwt_config.verify_sub,
            )
        except Exception:
            return super()._decode_jwt_from_config(encoded_token, csrf_value, allow_expired)


jwt = DecodeOnceJWTManager()
limiter = Limiter(key_func=get_remote_address, strategy=ONE_TRIP_FIXED_WINDOW)
cors = CORS()
db = SQLAlchemy()
migrate = Migrate()
cache = Cache()


def database_answers() -> bool:
    """Whether the SQL database answers (for the health checks of the modules that use it)."""
    try:
        db.session.execute(text("SELECT 1"))
    except SQLAlchemyError:
        return False
    finally:
        db.session.remove()
    return True


def migration_heads(directory: str) -> frozenset[str]:
    """The head revisions of the migrations in `directory`: what this code expects the
    database to be at (read once, at start-up: the files do not change under a process)."""
    return frozenset(ScriptDirectory(directory).get_heads())


def database_revisions() -> frozenset[str] | None:
    """The revisions the SQL database is stamped with (none before the first migration), or
    None when it does not answer. Alembic's own reader, which checks that `alembic_version`
    exists before it selects from it (a failed SELECT would abort a PostgreSQL transaction)."""
    try:
        with db.engine.connect() as connection:
            return frozenset(MigrationContext.configure(connection).get_current_heads())
    except SQLAlchemyError:
        return None
