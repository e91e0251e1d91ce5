"""Minimal settings for django-helpdesk 2.6.1 reading one IMAP mailbox of the dev stack.

Everything site-specific comes from the environment (bench/peer.py sets it):
PEER_DB (SQLite file), PEER_SQLITE (stock | tuned), PEER_SMTP_PORT and, for the tuned
variant, PEER_SMTP_USER / PEER_SMTP_PASSWORD (the acknowledgements), PEER_MEDIA
(attachments).
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
# "tuned" (the headline, like for like): the SQLite settings Postroom runs with
# (postroom/settings.py: WAL, synchronous=FULL), so the database is not what tells the two
# apart. PEER_SQLITE=stock keeps Django's stock SQLite settings (rollback journal,
# synchronous=FULL: an fsync per commit), as an out-of-the-box helpdesk install runs.
TUNED = os.environ.get("PEER_SQLITE", "tuned") != "stock"
if TUNED:
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 30,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;",
    }

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
TIME_ZONE = "UTC"
LANGUAGE_CODE = "en-us"
STATIC_URL = "static/"
MEDIA_ROOT = os.environ.get("PEER_MEDIA", str(BASE_DIR / "media"))
LOGIN_URL = "/login/"

# Acknowledgements: stock, through the dev stack's MX port (plain SMTP on 127.0.0.1, no
# login), as a minimal install on the mail server's own host may send; tuned, the way
# Postroom sends: the submission port, STARTTLS, authenticated (the dev stack's CA from
# SSL_CERT_FILE, which Django's default SSL context reads). Django opens a connection for
# each mail; that is helpdesk's own way of sending, kept as it is.
EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
EMAIL_HOST = "127.0.0.1"
EMAIL_PORT = int(os.environ.get("PEER_SMTP_PORT", "25"))
EMAIL_TIMEOUT = 30
if os.environ.get("PEER_SMTP_USER"):
    EMAIL_USE_TLS = True
    EMAIL_HOST_USER = os.environ["PEER_SMTP_USER"]
    EMAIL_HOST_PASSWORD = os.environ["PEER_SMTP_PASSWORD"]
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
