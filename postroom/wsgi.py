"""The WSGI application (waitress in `postroom web` and `postroom run`, or any WSGI server).

Refuses to load without a real POSTROOM_SECRET_KEY outside the demo: sessions and CSRF
tokens signed with a key everybody knows (it used to be a constant in the code) can be
forged by anybody.
"""

import os

from django.core.exceptions import ImproperlyConfigured
from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "postroom.settings")
application = get_wsgi_application()


def require_secret_key() -> None:
    from django.conf import settings

    try:
        key = settings.SECRET_KEY
    except ImproperlyConfigured:  # Django refuses an empty one on access
        key = ""
    if len(key) < settings.MIN_SECRET_KEY_LENGTH:
        raise ImproperlyConfigured(
            "POSTROOM_SECRET_KEY (or POSTROOM_SECRET_KEY_FILE) must be set to at least "
            f"{settings.MIN_SECRET_KEY_LENGTH} random characters to serve the web; e.g. "
            "python3 -c 'import secrets; print(secrets.token_urlsafe(48))'"
        )


require_secret_key()
