"""Production settings: secrets and paths come from the environment."""

import os
from pathlib import Path

from .base import *  # noqa: F401,F403
from .base import BASE_DIR

SECRET_KEY = os.environ["DJANGO_SECRET_KEY"]
DEBUG = False
ALLOWED_HOSTS = os.environ.get("DJANGO_ALLOWED_HOSTS", "localhost").split(",")

DATA_DIR = Path(os.environ.get("DJANGO_DATA_DIR", BASE_DIR.parent / "data"))
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": DATA_DIR / "db.sqlite3"}}
MEDIA_ROOT = DATA_DIR / "media"
STATIC_ROOT = Path(os.environ.get("DJANGO_STATIC_ROOT", BASE_DIR / "staticfiles"))
