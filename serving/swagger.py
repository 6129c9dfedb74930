"""``/docs``: the Swagger UI of the API, its assets served from the ``swagger-ui-bundle`` package (no CDN)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import FileResponse, HTMLResponse

from serving.errors import ServiceError

router = APIRouter(include_in_schema=False)

ASSETS = ("swagger-ui-bundle.js", "swagger-ui.css", "favicon-32x32.png")
"""The files of the bundle the page loads."""


def assets_dir() -> Path:
    """Where the installed Swagger UI bundle lies."""
    import swagger_ui_bundle

    return Path(swagger_ui_bundle.swagger_ui_path)


@router.get("/docs")
async def docs(request: Request) -> HTMLResponse:
    """The interactive API documentation, usable with no internet."""
    root = request.scope.get("root_path", "")
    return get_swagger_ui_html(
        openapi_url=root + request.app.openapi_url,
        title=f"{request.app.title} API",
        swagger_js_url=f"{root}/docs/assets/swagger-ui-bundle.js",
        swagger_css_url=f"{root}/docs/assets/swagger-ui.css",
        swagger_favicon_url=f"{root}/docs/assets/favicon-32x32.png",
        oauth2_redirect_url=f"{root}/docs/oauth2-redirect",
    )


@router.get("/docs/oauth2-redirect")
async def oauth2_redirect() -> HTMLResponse:
    """Swagger UI's OAuth2 redirect page."""
    return get_swagger_ui_oauth2_redirect_html()


@router.get("/docs/assets/{name}")
async def asset(name: str) -> FileResponse:
    """One file of the Swagger UI bundle."""
    if name not in ASSETS:
        raise ServiceError(404, "not_found", f"no documentation asset {name!r}")
    return FileResponse(assets_dir() / name, headers={"Cache-Control": "public, max-age=86400"})
