"""A Starlette app: / greets and counts, /health reports, /static serves files."""

from starlette.applications import Starlette
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

visits = 0


async def index(request):
    global visits
    visits += 1
    return PlainTextResponse(f"hello from asgisite, visit {visits}\n")


async def health(request):
    return JSONResponse({"status": "ok", "visits": visits})


app = Starlette(
    routes=[
        Route("/", index),
        Route("/health", health),
        Mount("/static", StaticFiles(packages=[("asgisite", "static")]), name="static"),
    ]
)
