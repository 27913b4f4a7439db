from django.conf import settings
from django.contrib import admin
from django.http import JsonResponse
from django.urls import path, re_path
from django.views.static import serve


def health(request):
    return JsonResponse({"status": "ok"})


urlpatterns = [
    path("admin/", admin.site.urls),
    path("health", health),
    # gunicorn serves the collected static files itself: no web server in
    # front of this fixture.
    re_path(r"^static/(?P<path>.*)$", serve, {"document_root": settings.STATIC_ROOT}),
]
