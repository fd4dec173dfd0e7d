"""/admin/v1/dead-letters (being built for issue 15)."""

from fastapi import APIRouter

router = APIRouter(prefix="/dead-letters", tags=["admin: dead letters"])
