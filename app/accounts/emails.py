"""The texts of the emails the accounts module sends."""

from app.accounts.mail import Email


def verification(to: str, link: str, token: str, lifetime_seconds: int) -> Email:
    return Email(
        to=to,
        subject="Confirm your email address",
        text=f"Welcome to Storefront!\n\nConfirm your address by opening:\n{link}\n\n"
        f"or send this token to POST /v1/auth/verify-email:\n{token}\n\n"
        f"The link expires in {lifetime_seconds // 3600} hours.\n",
    )


def password_reset(to: str, link: str, token: str, lifetime_seconds: int) -> Email:
    return Email(
        to=to,
        subject="Reset your password",
        text=f"Someone asked to reset your Storefront password.\n\nChoose a new one at:\n{link}\n\n"
        f"or send this token to POST /v1/auth/password/reset:\n{token}\n\n"
        f"The link expires in {lifetime_seconds // 60} minutes. If it was not you, ignore this email.\n",
    )
