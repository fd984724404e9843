"""PGP/MIME (RFC 3156) structures over raw MIME entities.

- §5 signed: multipart/signed; protocol="application/pgp-signature"; micalg=pgp-<hash>, the
  first part signed exactly as it stands (canonical CRLF), the second the armoured signature.
- §4 encrypted: multipart/encrypted; protocol="application/pgp-encrypted", a "Version: 1"
  control part, then the armoured OpenPGP message as application/octet-stream.
- §6.2 signed and encrypted: the combined form (one OpenPGP message both signed and
  encrypted), which every PGP/MIME reader understands and hides who signed from onlookers.
The entity handed in must already be 7-bit safe (quoted-printable or base64 bodies, RFC 3156
§3): secmail.outgoing prepares it so.
"""
from secmail import mimeraw, openpgp


def sign_entity(entity: bytes, secret: openpgp.SecretKey) -> bytes:
    entity = mimeraw.canonical(entity)
    signature, micalg = openpgp.sign_detached(entity, secret)
    boundary = mimeraw.new_boundary().encode()
    return b"".join([
        b'Content-Type: multipart/signed; protocol="application/pgp-signature"; micalg=' + micalg.encode() + b";\r\n",
        b' boundary="' + boundary + b'"\r\n\r\n',
        b"This is an OpenPGP/MIME signed message (RFC 3156).\r\n",
        b"--" + boundary + b"\r\n", entity, b"\r\n--" + boundary + b"\r\n",
        b'Content-Type: application/pgp-signature; name="signature.asc"\r\n',
        b"Content-Description: OpenPGP digital signature\r\n",
        b'Content-Disposition: attachment; filename="signature.asc"\r\n\r\n',
        mimeraw.canonical(signature.encode("ascii")),
        b"\r\n--" + boundary + b"--\r\n",
    ])


def encrypt_entity(entity: bytes, recipients_public, sign_with: openpgp.SecretKey | None = None) -> bytes:
    armored = openpgp.encrypt(mimeraw.canonical(entity), recipients_public, sign_with=sign_with)
    boundary = mimeraw.new_boundary().encode()
    return b"".join([
        b'Content-Type: multipart/encrypted; protocol="application/pgp-encrypted";\r\n',
        b' boundary="' + boundary + b'"\r\n\r\n',
        b"This is an OpenPGP/MIME encrypted message (RFC 3156).\r\n",
        b"--" + boundary + b"\r\n",
        b"Content-Type: application/pgp-encrypted\r\n",
        b"Content-Description: PGP/MIME version identification\r\n\r\n",
        b"Version: 1\r\n",
        b"\r\n--" + boundary + b"\r\n",
        b'Content-Type: application/octet-stream; name="encrypted.asc"\r\n',
        b"Content-Description: OpenPGP encrypted message\r\n",
        b'Content-Disposition: inline; filename="encrypted.asc"\r\n\r\n',
        mimeraw.canonical(armored.encode("ascii")),
        b"\r\n--" + boundary + b"--\r\n",
    ])
