"""Refusals a person can act on. They are HTTPExceptions so a route, a job's precheck and the
domain code raise the same thing; the app turns them into problem+json."""

from __future__ import annotations

from fastapi import HTTPException


class NotFound(HTTPException):
    def __init__(self, detail: str):
        super().__init__(404, detail=detail)


class Conflict(HTTPException):
    def __init__(self, detail: str):
        super().__init__(409, detail=detail)


class Invalid(HTTPException):
    def __init__(self, detail: str):
        super().__init__(422, detail=detail)

    def __str__(self) -> str:  # a job that fails on one reads as its detail
        return str(self.detail)
