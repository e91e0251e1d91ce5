"""Process settings, from the environment only (POSTROOM_*).

Business configuration (mailboxes, agents, rules) lives in the database and is loaded from
the TOML file by `postroom load`; nothing here describes the contact center itself.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from urllib.parse import unquote, urlparse

from django.core.exceptions import ImproperlyConfigured

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
    raise ImproperlyConfigured(f"{name} must be a boolean, got {value!r}")


def envint(name: str, default: int, *, lo: int = 0, hi: int = 10**9) -> int:
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        number = int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, got {value!r}") from None
    if not lo <= number <= hi:
        raise ImproperlyConfigured(f"{name} must be between {lo} and {hi}, got {number}")
    return number


def envlist(name: str, default: str = "") -> list[str]:
    """A comma-separated list; blanks dropped."""
    return [item.strip() for item in envstr(name, default).split(",") if item.strip()]


def envnetworks(name: str, default: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    try:
        return [ipaddress.ip_network(item, strict=False) for item in envlist(name, default)]
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name}: {exc}") from None


STATE_DIR = Path(envstr("POSTROOM_STATE_DIR", str(BASE_DIR / "var")))
# The site's configuration file, when the web knows it (`postroom run`, `postroom web
# --config`): transcripts then read customer mail from the mail server, read-only, with
# the file's passwords; without it, from the copy Postroom forwarded to the agent.
POSTROOM_CONFIG = envstr("POSTROOM_CONFIG")
# `postroom demo` sets this: the only place where the insecure conveniences below are allowed.
DEMO = envbool("POSTROOM_DEMO", False)
# Every page but /healthz and the login page needs a login; only the demo may open the
# live page (and its feed) to anonymous visitors, and the page then says so.
POSTROOM_LOGIN_REQUIRED = envbool("POSTROOM_WEB_LOGIN_REQUIRED", True)
if not POSTROOM_LOGIN_REQUIRED and not DEMO:
    raise ImproperlyConfigured(
        "POSTROOM_WEB_LOGIN_REQUIRED=false is only for the demo (POSTROOM_DEMO=true): "
        "it shows customers' mail to anyone who can reach the page"
    )
# Signs sessions and CSRF tokens. Empty outside the demo when not given: the web refuses
# to start then (postroom.web.checks.require_secret_key), instead of signing with a
# constant that is in everybody's copy of the code.
SECRET_KEY = envstr("POSTROOM_SECRET_KEY") or ("postroom-demo-only-" + "d" * 40 if DEMO else "")
MIN_SECRET_KEY_LENGTH = 32
DEBUG = envbool("POSTROOM_DEBUG", False)
ALLOWED_HOSTS = envlist("POSTROOM_ALLOWED_HOSTS", "127.0.0.1,localhost")

# -- behind a TLS-terminating reverse proxy (docs/security.md, docs/configuration.md) -----
# POSTROOM_HTTPS: people reach Postroom over https (true by default; the demo: false).
HTTPS = envbool("POSTROOM_HTTPS", not DEMO)
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = HTTPS
# The header the proxy sets to say the original request was https, e.g. X-Forwarded-Proto
# (only if the proxy always sets or overwrites it: a client could send it too).
_PROXY_SSL_HEADER = envstr("POSTROOM_PROXY_SSL_HEADER").strip()
if _PROXY_SSL_HEADER:
    SECURE_PROXY_SSL_HEADER = ("HTTP_" + _PROXY_SSL_HEADER.upper().replace("-", "_"), "https")
# Redirect http to https: on by default once the proxy tells us the scheme (without the
# header every request looks like http behind the proxy, and would redirect forever).
SECURE_SSL_REDIRECT = envbool("POSTROOM_SSL_REDIRECT", HTTPS and bool(_PROXY_SSL_HEADER))
SECURE_HSTS_SECONDS = envint("POSTROOM_HSTS_SECONDS", 365 * 86400 if HTTPS else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = envbool("POSTROOM_HSTS_INCLUDE_SUBDOMAINS", False)
# Origins allowed to POST with a session, e.g. https://postroom.example.com (Django
# compares the Origin header with the Host the proxy passes on; list them here when the
# proxy changes the host or the port).
CSRF_TRUSTED_ORIGINS = envlist("POSTROOM_CSRF_TRUSTED_ORIGINS")
# How many reverse proxies stand in front and append to X-Forwarded-For: the client's
# address is that many hops from the right. 0: REMOTE_ADDR is the client.
TRUSTED_PROXIES = envint("POSTROOM_TRUSTED_PROXIES", 0, hi=10)
# Who may open /admin/ at all (before logging in); default: loopback and private networks.
ADMIN_ALLOWED_NETWORKS = envnetworks(
    "POSTROOM_ADMIN_ALLOWED_IPS",
    "127.0.0.0/8,::1/128,10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,fc00::/7",
)
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
# The pages read the CSRF token from a <meta> tag; no script needs the cookie.
CSRF_COOKIE_HTTPONLY = True

# -- sessions and logins -----------------------------------------------------------------
# A working day on a shared desk, not Django's two weeks; gone when the browser closes.
SESSION_COOKIE_AGE = envint("POSTROOM_SESSION_SECONDS", 8 * 3600, lo=300, hi=30 * 86400)
SESSION_EXPIRE_AT_BROWSER_CLOSE = True
# API tokens: how long a new one lasts (`postroom token --days` may ask for less).
API_TOKEN_DAYS = envint("POSTROOM_API_TOKEN_DAYS", 90, lo=1, hi=3650)
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {
        "NAME": "django.contrib.auth.password_validation.MinimumLengthValidator",
        "OPTIONS": {"min_length": envint("POSTROOM_PASSWORD_MIN_LENGTH", 12, lo=8, hi=128)},
    },
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# django-axes: after this many failed logins for one username from one address, that
# pair is locked out for the cool-off time (both login pages: ours and the admin's).
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = envint("POSTROOM_LOGIN_FAILURE_LIMIT", 5, lo=1, hi=100)
AXES_COOLOFF_TIME = envint("POSTROOM_LOGIN_LOCKOUT_MINUTES", 15, lo=1, hi=7 * 24 * 60) / 60
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_CLIENT_IP_CALLABLE = "postroom.web.network.client_ip"
AXES_VERBOSE = False


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
        "ENGINE": "postroom.store.sqlite",
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
    "axes",
    "postroom.store",
    "postroom.web",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "postroom.web.network.AdminAllowList",
    "postroom.web.csp.ContentSecurityPolicy",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "postroom.web.network.RequestContext",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes asks: it turns a lockout into its 429 answer.
    "axes.middleware.AxesMiddleware",
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
LOGIN_URL = "/accounts/login/"

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
