"""Spanish and English: the browser's language by default, and the catalog is complete."""
import gettext
import re
from pathlib import Path

from django.test import Client

from tests.webmail.conftest import deliver, make_mail

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


# Every user-facing page in Spanish ------------------------------------------------------------
# The pages of secmail (keys), migration (import, export, other accounts) and the spam settings
# live outside webmail/ but share its catalogue (LOCALE_PATHS): these tests fail if their strings
# are missing from it or the catalogue is not found for them.

SPANISH = {"Accept-Language": "es-ES,es;q=0.9"}
ROOT = Path(__file__).resolve().parents[2]
# What `make messages` collects (the Makefile's I18N_IGNORE leaves out the rest): every string of these
# must be in the compiled catalogue.
USER_FACING = [ROOT / "webmail", ROOT / "secmail", ROOT / "migration", ROOT / "templates" / "migration", ROOT / "templates" / "base.html"]
GETTEXT_CALLS = {"_", "gettext", "gettext_lazy", "ngettext", "ngettext_lazy"}


def spanish_page(client, url):
    response = client.get(url, headers=SPANISH)
    assert response.status_code == 200, (url, response.status_code)
    content = response.content.decode()
    assert 'lang="es"' in content
    return content


def test_the_keys_page_is_in_spanish(alice_client):
    content = spanish_page(alice_client, "/security/keys/")
    for text in ["Firma y cifrado", "Sus claves", "Claves de sus contactos", "Buscar una clave (Web Key Directory)",
                 "Autoridades de certificación en las que confía", "Certificados revocados", "Añadir una lista de revocación"]:
        assert text in content, text
    assert "Your keys" not in content and "Revoked certificates" not in content


def test_a_refused_encrypted_message_is_explained_in_spanish(alice, bob, alice_client):
    """The error comes from secmail's own exception, raised outside any template."""
    response = alice_client.post("/compose/", {
        "from_address": "alice@example.test", "to": "bob@example.test", "cc": "", "bcc": "", "subject": "Plans",
        "body": "Friday.", "action": "send", "secmail_kind": "openpgp", "secmail_encrypt": "1"}, headers=SPANISH)
    assert response.status_code == 400
    content = response.content.decode()
    assert "no hay clave de cifrado para bob@example.test" in content and "no encryption key" not in content


def test_the_transfer_pages_are_in_spanish(alice_client):
    content = spanish_page(alice_client, "/settings/transfer/")
    for text in ["Importar y exportar", "Importar correo", "Subir e importar", "Importaciones y exportaciones",
                 "Aún no se ha importado nada.", "Descargar el correo", "Correo de otras cuentas", "Formato"]:
        assert text in content, text
    assert "Import mail" not in content and "Download mail" not in content
    content = spanish_page(alice_client, "/settings/transfer/external/")
    for text in ["Añadir una cuenta", "Nombre de usuario", "Servidor", "Dejar los mensajes en el servidor",
                 "TLS desde el primer byte (993/995)", "ninguna (texto sin cifrar)"]:
        assert text in content, text
    assert "Add an account" not in content


def test_the_spam_settings_are_in_spanish(alice_client):
    content = spanish_page(alice_client, "/settings/spam/")
    for text in ["Filtro de spam", "Marcar como spam a partir de la puntuación", "Listas de permitidos y bloqueados",
                 "Dirección o dominio", "Sus listas están vacías."]:
        assert text in content, text
    assert "Allow and block lists" not in content


def test_the_spam_verdict_is_explained_in_spanish(alice, alice_client):
    from antispam.models import Verdict

    message = deliver(alice, make_mail("Deal"))
    Verdict.objects.create(account=alice, blob=message.blob, score=4.5, action="tag", rules=[],
                           results={"spf": "pass", "dmarc": "fail"})
    content = spanish_page(alice_client, f"/f/{message.folder_id}/m/{message.uid}/")
    for text in ["Comprobación de spam: marcado como posible spam (puntuación 4,5)", "Autenticación del remitente",
                 "el dominio del remitente no ha superado DMARC", "No se ha encontrado nada sospechoso."]:
        assert text in content, text
    assert "marked as possible spam" not in content and "vouch" not in content


def test_a_conversation_page_is_in_spanish(alice, alice_client):
    first = deliver(alice, make_mail("Lunch?", headers=[("Message-ID", "<q@elsewhere.test>")]))
    deliver(alice, make_mail("Re: Lunch?", headers=[("Message-ID", "<a@elsewhere.test>"), ("In-Reply-To", "<q@elsewhere.test>"),
                                                  ("References", "<q@elsewhere.test>")]))
    content = spanish_page(alice_client, f"/f/{first.folder_id}/m/{first.uid}/conversation/")
    for text in ["Volver a la lista", "Responder", "Reenviar", "Marcar como leído", "Mover a…", "2 mensajes"]:
        assert text in content, text
    assert "Back to list" not in content and "Mark unread" not in content


def user_facing_msgids():
    """The msgids that the user-facing templates and modules ask for, as makemessages finds them."""
    import ast

    from django.utils.translation.template import templatize

    literal = r"""u?('(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")"""
    files = [p for base in USER_FACING for p in ([base] if base.is_file() else base.rglob("*"))
             if p.suffix in {".html", ".py"} and "migrations" not in p.parts and "locale" not in p.parts]
    assert len(files) > 30
    found = {}
    for path in files:
        source = path.read_text(encoding="utf-8")
        where = str(path.relative_to(ROOT))
        if path.suffix == ".html":
            code = templatize(source, origin=str(path))
            for match in re.finditer(rf"\b(?:gettext|_)\({literal}\)", code):
                found[ast.literal_eval(match.group(1))] = where
            for match in re.finditer(rf"\bngettext\({literal}, {literal}, count\)", code):
                found[ast.literal_eval(match.group(1))] = where
            continue
        for node in ast.walk(ast.parse(source)):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in GETTEXT_CALLS
                    and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
                found[node.args[0].value] = where
    return found


def test_every_string_of_the_user_facing_pages_is_translated():
    """A string wrapped in gettext or {% translate %} but missing from the Spanish catalogue (or fuzzy
    there, which compiles to nothing) fails here: run `make messages` and translate it."""
    compiled = gettext.GNUTranslations((CATALOG / "django.mo").open("rb"))
    msgids = user_facing_msgids()
    assert "Signing and encryption" in msgids and "Import mail" in msgids and "Spam filter" in msgids
    missing = sorted(f"{where}: {msgid!r}" for msgid, where in msgids.items()
                     if msgid not in compiled._catalog and (msgid, 0) not in compiled._catalog)
    assert not missing, "\n".join(missing)
