"""/admin/v1/aggregates (being built for issue 15)."""

from fastapi import APIRouter

router = APIRouter(prefix="/aggregates", tags=["admin: aggregates"])
