"""Spanish and English: the browser's language by default, and the catalog is complete."""
import gettext
import re
from pathlib import Path

from django.test import Client

CATALOG = Path(__file__).resolve().parents[2] / "webmail" / "locale" / "es" / "LC_MESSAGES"


def test_the_sign_in_page_speaks_spanish_to_a_spanish_browser(db):
    response = Client().get("/login/", headers={"Accept-Language": "es-ES,es;q=0.9"})
    content = response.content.decode()
    assert 'lang="es"' in content
    assert "Recordarme" in content and "Iniciar sesión" in content and "Dirección de correo" in content


def test_english_is_the_default(db):
    content = Client().get("/login/").content.decode()
    assert 'lang="en"' in content and "Remember me" in content


def test_the_spanish_catalog_is_complete_and_compiled(db):
    """Every msgid of the .po has a translation, and the .mo says the same (not stale)."""
    po = (CATALOG / "django.po").read_text(encoding="utf-8")
    compiled = gettext.GNUTranslations((CATALOG / "django.mo").open("rb"))
    entries = re.findall(r'^msgid ((?:".*"\n)+)(?:msgid_plural (?:".*"\n)+)?msgstr(?:\[0\])? ((?:".*"\n)+)', po + "\n", re.M)
    assert len(entries) > 100
    for raw_id, raw_str in entries[1:]:
        msgid = "".join(eval(line) for line in raw_id.strip().split("\n"))  # noqa: S307 - our own .po
        msgstr = "".join(eval(line) for line in raw_str.strip().split("\n"))  # noqa: S307
        assert msgstr, f"untranslated: {msgid!r}"
        assert compiled.gettext(msgid) == msgstr or compiled.ngettext(msgid, "", 1) == msgstr, msgid
