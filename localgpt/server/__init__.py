"""The HTTP server (``localgpt serve``) and the terminal chat (``localgpt chat``).

FastAPI is imported only when an app is built, so ``import localgpt.server`` stays light.

Example::

    from localgpt.server import create_app
    app = create_app(Settings())      # then: uvicorn.run(app, host="127.0.0.1", port=8000)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastapi import FastAPI

    from localgpt.config import Settings


def create_app(settings: Settings, pipeline_factory: Any = None) -> FastAPI:
    """The localgpt FastAPI app (see :func:`localgpt.server.app.create_app`)."""
    from localgpt.server.app import create_app as build

    return build(settings, pipeline_factory)
