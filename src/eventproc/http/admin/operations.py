"""/admin/v1/operations (being built for issue 15)."""

from fastapi import APIRouter

router = APIRouter(prefix="/operations", tags=["admin: operations"])
