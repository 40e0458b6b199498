"""Settings of the minimal Django example served by wsgi-rs: production-shaped (DEBUG off,
explicit ALLOWED_HOSTS), no database, one app module (mysite itself, for its templates)."""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

# Set DJANGO_SECRET_KEY in production; this fallback is for the local example only.
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "wsgi-rs-example-not-secret-change-me")
DEBUG = False
ALLOWED_HOSTS = os.environ.get("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost,[::1]").split(",")

INSTALLED_APPS = ["mysite"]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]
ROOT_URLCONF = "mysite.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {"context_processors": ["django.template.context_processors.request"]},
    }
]
WSGI_APPLICATION = "mysite.wsgi.application"
DATABASES = {}
USE_TZ = True
TIME_ZONE = "UTC"
LANGUAGE_CODE = "en-us"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
# Errors go to the server's error stream (wsgi.errors / standard error), as Django's default
# logging does when DEBUG is off and no admins are set.
