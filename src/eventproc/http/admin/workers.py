"""/admin/v1/workers (being built for issue 15)."""

from fastapi import APIRouter

router = APIRouter(prefix="/workers", tags=["admin: workers"])
