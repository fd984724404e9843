"""First-run help: an admin login for the Django admin, and what to do next."""
import secrets
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction

from accounts.models import Domain


@transaction.atomic
def ensure_admin_user():
    """Create the `admin` superuser if there is no superuser; return its password once, else None."""
    User = get_user_model()
    if User.objects.filter(is_superuser=True).exists():
        return None
    password = secrets.token_urlsafe(12)
    user = User.objects.filter(username="admin").first() or User(username="admin")
    user.is_staff = user.is_superuser = user.is_active = True
    user.set_password(password)
    user.save()
    return password


def ports_table():
    s = settings
    rows = [
        ("web (webmail, /admin/, /api/)", s.MAILSUITE_HTTP_PORT),
        ("SMTP (MX, STARTTLS)", s.MAILSUITE_SMTP_PORT),
        ("submission (STARTTLS + AUTH)", s.MAILSUITE_SUBMISSION_PORT),
        ("SMTPS (TLS + AUTH)", s.MAILSUITE_SMTPS_PORT),
    ]
    lines = [f"  {name:<32} {s.MAILSUITE_BIND}:{port}" for name, port in rows]
    if s.CELERY_BROKER_URL == "filesystem://":
        broker = "embedded (in the data dir)"
    else:
        url = urlsplit(s.CELERY_BROKER_URL)  # never print credentials
        broker = f"{url.scheme}://{url.hostname}:{url.port or ''}"
    lines.append(f"  {'outbound queue':<32} Celery, broker {broker}")
    return "\n".join(lines)


def welcome(admin_password):
    lines = [
        f"mailsuite {settings.MAILSUITE_HOSTNAME} — data in {settings.DATA_DIR}",
        ports_table(),
    ]
    if admin_password:
        lines += [
            "",
            "A Django admin login was created (shown only this once):",
            f"  http://{settings.MAILSUITE_BIND}:{settings.MAILSUITE_HTTP_PORT}/admin/  user: admin  password: {admin_password}",
        ]
    if not Domain.objects.exists():
        lines += [
            "",
            "No mail domains yet. Add one and an account:",
            "  .venv/bin/python manage.py domain add example.org",
            "  .venv/bin/python manage.py account add alice@example.org --password-stdin",
            "or run `make demo` for example.test with two accounts and a few messages.",
        ]
    return "\n".join(lines)
