"""Request and response schemas of /v1/auth and /v1/users."""

import marshmallow as ma
from marshmallow import validate

from app.accounts.interface import ROLES
from app.gateway.cart_schemas import MergeResultSchema  # noqa: F401 (referenced by name below)
from app.gateway.fields import TrimmedString

PASSWORD = ma.fields.String(required=True, validate=validate.Length(1, 256), metadata={"format": "password"})


def _email(**kwargs):
    return ma.fields.Email(
        required=True, validate=validate.Length(3, 254), metadata={"example": "ada@example.com"}, **kwargs
    )


def _token(**kwargs):
    return ma.fields.String(required=True, validate=validate.Length(1, 512), **kwargs)


def _otp(description: str = "The 6-digit code from your authenticator app", **kwargs):
    return ma.fields.String(
        validate=validate.Regexp(r"^\d{6}$", error="Send the 6-digit code."),
        metadata={"example": "123456", "description": description},
        **kwargs,
    )


class RegisterSchema(ma.Schema):
    email = _email()
    password = ma.fields.String(
        required=True,
        validate=validate.Length(1, 256),
        metadata={"format": "password", "description": ">= 10 characters, not your email, not a common password"},
    )


class LoginSchema(ma.Schema):
    email = _email()
    password = PASSWORD
    otp = _otp("Required when two-factor authentication is on")


class SessionSchema(ma.Schema):
    access_token = ma.fields.String(data_key="accessToken")
    refresh_token = ma.fields.String(data_key="refreshToken", allow_none=True)
    user_id = ma.fields.String(data_key="userId")
    expires_in = ma.fields.Integer(data_key="expiresIn", metadata={"description": "Seconds the access token lasts"})
    token_type = ma.fields.Constant("Bearer", data_key="tokenType")
    cart_merge = ma.fields.Nested(
        "MergeResultSchema", data_key="cartMerge", allow_none=True, metadata={"description": "With X-Guest-Token only"}
    )


class TokenSchema(ma.Schema):
    token = _token()


class EmailSchema(ma.Schema):
    email = _email()


class PasswordResetSchema(ma.Schema):
    token = _token()
    new_password = ma.fields.String(required=True, validate=validate.Length(1, 256), data_key="newPassword")


def _current_password():
    return ma.fields.String(
        required=True,
        validate=validate.Length(1, 256),
        metadata={"format": "password", "description": "Your current password (asked again for this change)"},
    )


class MfaSetupRequestSchema(ma.Schema):
    password = _current_password()


class MfaEnableSchema(ma.Schema):
    otp = _otp(required=True)
    password = _current_password()


class MfaDisableSchema(ma.Schema):
    password = _current_password()
    otp = _otp("Optional: when sent, a current code is checked too")


class MfaSetupSchema(ma.Schema):
    secret = ma.fields.String(metadata={"description": "For manual entry; store it only in the authenticator app"})
    otpauth_uri = ma.fields.String(data_key="otpauthUri")


class UserSchema(ma.Schema):
    user_id = ma.fields.String(data_key="userId")
    email = ma.fields.String()
    display_name = ma.fields.String(data_key="displayName")
    roles = ma.fields.List(ma.fields.String())
    is_active = ma.fields.Boolean(data_key="isActive")
    email_verified = ma.fields.Boolean(data_key="emailVerified")
    mfa_enabled = ma.fields.Boolean(data_key="mfaEnabled")
    created_at = ma.fields.DateTime(data_key="createdAt")
    updated_at = ma.fields.DateTime(data_key="updatedAt")


class ProfilePatchSchema(ma.Schema):
    display_name = TrimmedString(required=True, validate=validate.Length(0, 100), data_key="displayName")


class PasswordChangeSchema(ma.Schema):
    current_password = ma.fields.String(required=True, validate=validate.Length(1, 256), data_key="currentPassword")
    new_password = ma.fields.String(required=True, validate=validate.Length(1, 256), data_key="newPassword")


class AdminUserPatchSchema(ma.Schema):
    roles = ma.fields.List(ma.fields.String(validate=validate.OneOf(ROLES)), validate=validate.Length(max=len(ROLES)))
    is_active = ma.fields.Boolean(data_key="isActive")

    @ma.validates_schema
    def not_empty(self, data, **kwargs):
        if not data:
            raise ma.ValidationError("Send `roles` or `isActive`.")
