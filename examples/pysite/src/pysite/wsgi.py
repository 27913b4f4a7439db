"""WSGI entry point: gunicorn pysite.wsgi:application."""

from .app import App

application = App()
