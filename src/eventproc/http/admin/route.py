"""/admin/v1/route (being built for issue 15)."""

from fastapi import APIRouter

router = APIRouter(prefix="/route", tags=["admin: routing"])
