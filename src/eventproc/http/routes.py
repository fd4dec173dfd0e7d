"""A router's routes straight onto the app: the one list FastAPI matches a request against.

``app.include_router`` keeps the router as a unit that FastAPI matches
through a context per inclusion, twice per request (to find the route,
then to handle it), for every router in front of the one asked: with the
service's thirteen routers that was a fifth of a trivial admin request's
Python calls (cProfile, in-process ASGI: /admin/v1/audit 2,083 -> 1,602).
Re-added as the app's own routes, with the prefix and everything their
router gave them, they answer and document exactly as before (the OpenAPI
document is byte-identical, tests/web/test_openapi.py).
"""

from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute


def add_routes(app: FastAPI, router: APIRouter, prefix: str = "") -> None:
    """Each of ``router``'s routes as a route of ``app``, under ``prefix``, in order."""
    for route in router.routes:
        if not isinstance(route, APIRoute):
            raise TypeError(f"{route!r}: only FastAPI routes are added (include the router)")
        app.router.add_api_route(
            prefix + route.path,
            route.endpoint,
            response_model=route.response_model,
            status_code=route.status_code,
            tags=route.tags,
            dependencies=route.dependencies,
            summary=route.summary,
            description=route.description,
            response_description=route.response_description,
            responses=route.responses,
            deprecated=route.deprecated,
            methods=route.methods,
            operation_id=route.operation_id,
            response_model_include=route.response_model_include,
            response_model_exclude=route.response_model_exclude,
            response_model_by_alias=route.response_model_by_alias,
            response_model_exclude_unset=route.response_model_exclude_unset,
            response_model_exclude_defaults=route.response_model_exclude_defaults,
            response_model_exclude_none=route.response_model_exclude_none,
            include_in_schema=route.include_in_schema,
            response_class=route.response_class,
            name=route.name,
            callbacks=route.callbacks,
            openapi_extra=route.openapi_extra,
            generate_unique_id_function=route.generate_unique_id_function,
            strict_content_type=route.strict_content_type,
            max_body_size=route.max_body_size,
        )
