"""/admin/v1/handlers (being built for issue 15)."""

from fastapi import APIRouter

router = APIRouter(prefix="/handlers", tags=["admin: handlers"])
