import sys

import django
from django.shortcuts import render


def index(request):
    return render(
        request,
        "mysite/index.html",
        {
            "django_version": django.get_version(),
            "python": sys.version.split()[0],
            "application_group": request.META.get("mod_wsgi.application_group"),
        },
    )
