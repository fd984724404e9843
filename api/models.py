"""API tokens: a user's key for scripts, with scopes and an expiry. Writes go through api.actions.

A token is shown once, when it is made: `ms_<prefix>_<secret>`. The prefix finds the row
(unique, indexed); only the SHA-256 of the whole token is stored. The secret is 32 random
bytes, so a fast hash is enough: there is nothing to guess by brute force.
"""
from django.conf import settings
from django.db import models


class ApiToken(models.Model):
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100, blank=True, help_text="What the token is for")
    prefix = models.CharField(max_length=16, unique=True, help_text="Public part of the token; finds the row")
    key_hash = models.CharField(max_length=64, help_text="SHA-256 of the whole token, hex")
    # ["accounts:read", "queue:write", "*:read", "*"]: see api.scopes.
    scopes = models.JSONField(default=list)
    expires = models.DateTimeField(null=True, blank=True, help_text="Empty: never")
    created = models.DateTimeField(auto_now_add=True)
    last_used = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created"]
        verbose_name = "API token"

    def __str__(self):
        return f"ms_{self.prefix}_… ({self.user}{', ' + self.name if self.name else ''})"
