"""Minimal settings for django-helpdesk 2.6.1 reading one IMAP mailbox of the dev stack.

Everything site-specific comes from the environment (bench/peer.py sets it):
PEER_DB (SQLite file), PEER_SMTP_PORT (the dev stack's plain SMTP port, for the
acknowledgements), PEER_MEDIA (attachments).
"""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
SECRET_KEY = "peer-bench-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
SITE_ID = 1

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.sites",
    "django.contrib.humanize",
    "rest_framework",
    "helpdesk",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]

ROOT_URLCONF = "peerproj.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("PEER_DB", str(BASE_DIR / "peer.sqlite3")),
    }
}
# By default the same SQLite tuning Postroom runs with (postroom/settings.py: WAL,
# synchronous=NORMAL), so the database is not what tells the two apart. PEER_SQLITE=stock
# keeps Django's stock SQLite settings (rollback journal, synchronous=FULL: an fsync per
# commit), as an out-of-the-box helpdesk install runs.
if os.environ.get("PEER_SQLITE", "tuned") != "stock":
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 30,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
TIME_ZONE = "UTC"
LANGUAGE_CODE = "en-us"
STATIC_URL = "static/"
MEDIA_ROOT = os.environ.get("PEER_MEDIA", str(BASE_DIR / "media"))
LOGIN_URL = "/login/"

# Acknowledgements leave through the dev stack's MX port (plain SMTP on 127.0.0.1; its
# submission port wants a certificate Django would refuse to verify for 127.0.0.1).
EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
EMAIL_HOST = "127.0.0.1"
EMAIL_PORT = int(os.environ.get("PEER_SMTP_PORT", "25"))
EMAIL_TIMEOUT = 30
DEFAULT_FROM_EMAIL = "ingest@example.test"
SERVER_EMAIL = "ingest@example.test"

# No pinax-teams: a plain helpdesk.
HELPDESK_TEAMS_MODE_ENABLED = False

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
}
