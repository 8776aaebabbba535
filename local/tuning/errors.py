"""Errors in Google's JSON shape, so the google-genai SDK raises ClientError/ServerError with the
right ``code`` and ``status``."""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    def __init__(self, http_code: int, status: str, message: str) -> None:
        super().__init__(message)
        self.http_code = http_code
        self.status = status
        self.message = message

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.http_code, "message": self.message, "status": self.status}}

    @classmethod
    def invalid_argument(cls, message: str) -> ApiError:
        return cls(400, "INVALID_ARGUMENT", message)

    @classmethod
    def failed_precondition(cls, message: str) -> ApiError:
        return cls(400, "FAILED_PRECONDITION", message)

    @classmethod
    def not_found(cls, message: str) -> ApiError:
        return cls(404, "NOT_FOUND", message)

    @classmethod
    def resource_exhausted(cls, message: str) -> ApiError:
        return cls(429, "RESOURCE_EXHAUSTED", message)
