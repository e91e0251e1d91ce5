"""postroom.devstack: a throwaway real Postfix + Dovecot mail stack on 127.0.0.1.

``DevStack`` (stack.py) starts, stops and adds users to one instance living in a state
directory; ``cli.main`` is the ``postroom devstack`` command; ``testing`` holds the pytest
helpers. See /work/shared/mailstack-notes.md for the pitfalls the generated config avoids.
"""

from .stack import DevStack, DevStackError
from .users import UserError

__all__ = ["DevStack", "DevStackError", "UserError"]
