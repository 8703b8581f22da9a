"""The API docs pages (Swagger UI and Redoc) from the vendored files, with no inline script."""

from __future__ import annotations

from html import escape

from fastapi.responses import HTMLResponse

from percept.web.security import DOCS_POLICY

VENDOR = "/static/vendor"


def docs_page(title: str, head: str, body: str) -> HTMLResponse:
    html = (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n<title>{escape(title)}</title>\n'
            f'<link rel="icon" href="/favicon.ico">\n{head}</head>\n<body>\n{body}</body>\n</html>\n')
    return HTMLResponse(html, headers={"Content-Security-Policy": DOCS_POLICY})


def swagger_ui_page(title: str, openapi_url: str) -> HTMLResponse:
    """Swagger UI reading ``openapi_url``; its start-up script is ``/static/docs/swagger-init.js``."""
    return docs_page(
        title, f'<link rel="stylesheet" href="{VENDOR}/swagger-ui/swagger-ui.css">\n',
        f'<div id="swagger-ui" data-openapi-url="{escape(openapi_url)}"></div>\n'
        f'<script src="{VENDOR}/swagger-ui/swagger-ui-bundle.js"></script>\n'
        '<script src="/static/docs/swagger-init.js"></script>\n')


def redoc_page(title: str, openapi_url: str) -> HTMLResponse:
    """Redoc reading ``openapi_url``."""
    return docs_page(
        title, "<style>body { margin: 0; padding: 0; }</style>\n",
        f'<redoc spec-url="{escape(openapi_url)}"></redoc>\n'
        f'<script src="{VENDOR}/redoc/redoc.standalone.js"></script>\n')
