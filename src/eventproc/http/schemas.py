"""Response models shared by every router: open objects and the one error body.

Models are open (extra keys allowed and kept) so that adding a key to a
response never breaks a client or the schema checks; documenting the key is
then one field line.
"""

from pydantic import BaseModel, ConfigDict


class OpenModel(BaseModel):
    """An object that may carry more keys than it documents."""

    model_config = ConfigDict(extra="allow")


class ErrorBody(OpenModel):
    """Every error answer: ``{"error": "..."}``, sometimes with more keys (``path``, ``detail``)."""

    error: str
