"""Turns database outages into the module's own AccountsUnavailable."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from sqlalchemy.exc import OperationalError

from app.accounts.errors import AccountsUnavailable
from app.extensions import db

logger = logging.getLogger(__name__)
P = ParamSpec("P")
R = TypeVar("R")


def translate_database_errors(function: Callable[P, R]) -> Callable[P, R]:
    @functools.wraps(function)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return function(*args, **kwargs)
        except OperationalError as error:
            db.session.rollback()
            logger.warning("accounts database unavailable: %s", error)
            raise AccountsUnavailable("The accounts database is unavailable; try again shortly.") from error

    return wrapper
