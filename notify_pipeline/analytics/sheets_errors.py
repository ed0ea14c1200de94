"""Errors of the Sheets export, and the one place Google's errors are turned into them."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from enum import StrEnum

import gspread
import requests
from google.auth.exceptions import GoogleAuthError

from notify_pipeline.errors import NotifyError


class SheetsErrorReason(StrEnum):
    """Why a Sheets export failed."""

    INVALID_PRINCIPAL = "invalid_principal"
    INVALID_ROW = "invalid_row"
    INVALID_CONFIG = "invalid_config"
    API_ERROR = "api_error"


class SheetsExportError(NotifyError):
    """A Sheets export failed; `reason` says why, `status` is Google's HTTP status if any.

    The message carries Google's error text only, never a credential or a request header.
    """

    def __init__(self, reason: SheetsErrorReason, message: str, *, status: int | None = None):
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.status = status

    def __str__(self) -> str:
        return f"{self.reason.value}: {self.message}"

    def __repr__(self) -> str:
        return f"SheetsExportError({self.reason.value!r}, {self.message!r}, status={self.status})"


@contextlib.contextmanager
def google_api(action: str) -> Iterator[None]:
    """Turn Google's and the transport's errors into `SheetsExportError` naming `action`.

    Only Google's status and message are kept: the failed response (which holds the request and
    its Authorization header) is not chained into the new error.
    """
    try:
        yield
    except gspread.exceptions.APIError as err:
        status = err.error.get("status", "")
        message = err.error.get("message", "")
        raise SheetsExportError(
            SheetsErrorReason.API_ERROR,
            f"could not {action}: HTTP {err.code} {status}: {message}",
            status=err.code,
        ) from None
    except GoogleAuthError as err:
        raise SheetsExportError(
            SheetsErrorReason.API_ERROR,
            f"could not {action}: credentials refused ({type(err).__name__})",
        ) from None
    except requests.RequestException as err:
        raise SheetsExportError(
            SheetsErrorReason.API_ERROR, f"could not {action}: {type(err).__name__}: {err}"
        ) from None
