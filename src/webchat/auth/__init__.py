"""Authentication: who is asking (``Principal``), how each ``--auth`` mode finds out
(``authenticators``, ``oidc``), the users file (``users``), browser sessions (``sessions``)
and the Gatekeeper the security middleware consults (``gate``).

Only the Principal is imported here: ``webchat.settings`` needs the mode names, and the rest
needs the settings.
"""

from webchat.auth.principal import LOCAL_USER, AuthMode, Principal, Role

__all__ = ["LOCAL_USER", "AuthMode", "Principal", "Role"]
