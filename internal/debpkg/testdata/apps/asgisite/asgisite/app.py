"""A Starlette app: / greets and counts, /health reports."""

from starlette.applications import Starlette
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

visits = 0


async def index(request):
    global visits
    visits += 1
    return PlainTextResponse(f"hello from asgisite, visit {visits}\n")


async def health(request):
    return JSONResponse({"status": "ok", "visits": visits})


app = Starlette(routes=[Route("/", index), Route("/health", health)])
