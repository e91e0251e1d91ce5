"""Process settings, from the environment only (POSTROOM_*).

Business configuration (mailboxes, agents, rules) lives in the database and is loaded from
the TOML file by `postroom load`; nothing here describes the contact center itself.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import unquote, urlparse

BASE_DIR = Path(__file__).resolve().parent.parent


def envstr(name: str, default: str = "") -> str:
    """A string setting; NAME_FILE, when set, names a file holding the value (secrets)."""
    path = os.environ.get(name + "_FILE")
    if path:
        return Path(path).read_text().strip()
    return os.environ.get(name, default)


def envbool(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"{name} must be a boolean, got {value!r}")


STATE_DIR = Path(envstr("POSTROOM_STATE_DIR", str(BASE_DIR / "var")))
SECRET_KEY = envstr("POSTROOM_SECRET_KEY") or "postroom-insecure-development-key-change-me"
DEBUG = envbool("POSTROOM_DEBUG", False)
ALLOWED_HOSTS = [h for h in envstr("POSTROOM_ALLOWED_HOSTS", "127.0.0.1,localhost").split(",") if h]


def database_from_url(url: str) -> dict:
    """DATABASE_URL → Django DATABASES entry (sqlite:///path or postgres://user:pw@host/db)."""
    parsed = urlparse(url)
    if parsed.scheme == "sqlite":
        return sqlite_database(Path(unquote(parsed.path)))
    if parsed.scheme in ("postgres", "postgresql"):
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": unquote(parsed.path.lstrip("/")),
            "USER": unquote(parsed.username or ""),
            "PASSWORD": unquote(parsed.password or ""),
            "HOST": parsed.hostname or "",
            "PORT": str(parsed.port or ""),
            "CONN_MAX_AGE": 0,
        }
    raise ValueError(f"unsupported database URL scheme {parsed.scheme!r}")


def sqlite_database(path: Path) -> dict:
    # WAL lets the web process read while the engine writes; IMMEDIATE takes the write lock
    # at BEGIN so two writers queue on busy_timeout instead of failing with "database is
    # locked" on lock upgrade mid-transaction. synchronous=FULL: a commit is on disk before
    # the engine acts on it (deletes, moves, sends); with NORMAL a power loss could undo
    # commits that an IMAP move already relied on (docs/decisions/0012).
    return {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": str(path),
        "OPTIONS": {
            "transaction_mode": "IMMEDIATE",
            "timeout": 30,
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;",
        },
    }


DATABASES = {
    "default": database_from_url(envstr("DATABASE_URL"))
    if envstr("DATABASE_URL")
    else sqlite_database(STATE_DIR / "postroom.sqlite3")
}

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "postroom.store",
    "postroom.web",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "postroom.urls"
WSGI_APPLICATION = "postroom.wsgi.application"
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

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
TIME_ZONE = "UTC"
LANGUAGE_CODE = "en-us"
STATIC_URL = "static/"
STATIC_ROOT = STATE_DIR / "static"
LOGIN_URL = "/admin/login/"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "loggers": {
        "postroom": {
            "handlers": ["console"],
            "level": envstr("POSTROOM_LOG_LEVEL", "INFO"),
            "propagate": False,
        },
    },
}
