"""Sign-up, login tokens and the guard that opens project_manager's API to users and services."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import BaseModel, Field

from project_manager.accounts import AccountError, User
from tango.web import OPEN_PATHS, RuntimeDep, is_service_call

# Paths under these prefixes are the API and need a user token (or the service token); the rest
# is the web UI's static files and the docs.
PROTECTED = ("/jobs", "/projects", "/devices", "/auth/me", "/auth/tokens", "/runs", "/proxy")
OPEN = OPEN_PATHS | {"/auth/register", "/auth/token"}


def guard(request: Request) -> None:
    runtime = request.app.state.runtime
    path = request.url.path
    request.state.user = None
    if path in OPEN or not path.startswith(PROTECTED):
        return
    if is_service_call(request, runtime):
        return
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    user = runtime.accounts.user_for_token(token) if scheme.lower() == "bearer" and token else None
    if user is None:
        raise HTTPException(401, detail="sign in first: send 'Authorization: Bearer <token>' "
                                        "(get a token from POST /auth/token)",
                            headers={"WWW-Authenticate": "Bearer"})
    if path.startswith("/jobs") and not user.is_admin:
        # Raw job records span every project; people see their own under /projects/{id}/runs.
        raise HTTPException(403, detail="the /jobs routes are for administrators; "
                                        "your runs are under /projects/{project_id}/runs")
    request.state.user = user


async def current_user(request: Request) -> User:
    user = getattr(request.state, "user", None)
    if user is None:
        raise HTTPException(403, detail="this route is for signed-in users, not for service calls")
    return user


UserDep = Annotated[User, Depends(current_user)]
router = APIRouter(prefix="/auth", tags=["auth"])


class Credentials(BaseModel):
    username: str = Field(min_length=2, max_length=64)
    password: str = Field(min_length=1, max_length=1024)


class TokenRequest(Credentials):
    name: str = Field("api", max_length=128)


class UserPublic(BaseModel):
    id: str
    username: str
    is_admin: bool


@router.post("/register", status_code=201, response_model=UserPublic)
def register(body: Credentials, runtime: RuntimeDep, request: Request) -> UserPublic:
    accounts = runtime.accounts
    first = accounts.count() == 0
    if not first and not runtime.settings.signup_open:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        admin = accounts.user_for_token(token) if token else None
        if admin is None or not admin.is_admin:
            raise HTTPException(403, detail="sign-up is closed here; ask an administrator to create your account")
    try:
        user = accounts.create_user(username=body.username, password=body.password, is_admin=first)
    except AccountError as exc:
        raise HTTPException(422, detail=str(exc)) from exc
    return UserPublic(**user.__dict__)


@router.post("/token")
def login(body: TokenRequest, runtime: RuntimeDep) -> dict[str, Any]:
    user = runtime.accounts.authenticate(username=body.username, password=body.password)
    if user is None:
        raise HTTPException(401, detail="wrong username or password")
    token_id, token = runtime.accounts.issue_token(user, name=body.name)
    return {"token": token, "token_id": token_id, "user": UserPublic(**user.__dict__).model_dump()}


@router.get("/me", response_model=UserPublic)
def me(user: UserDep) -> UserPublic:
    return UserPublic(**user.__dict__)


@router.get("/tokens")
def my_tokens(user: UserDep, runtime: RuntimeDep) -> list[dict[str, Any]]:
    return runtime.accounts.list_tokens(user)


@router.delete("/tokens/{token_id}", status_code=204)
def revoke(token_id: str, user: UserDep, runtime: RuntimeDep) -> None:
    if not runtime.accounts.revoke_token(user, token_id):
        raise HTTPException(404, detail=f"you have no token {token_id!r}")
