"""Private key material once opened: what signing and decryption are handed.

The sealed blob of an OwnKey holds JSON: S/MIME {"key": PKCS#8 PEM, "chain": [PEM, …]},
OpenPGP {"secret": armoured secret key, "passphrase": its gpg passphrase}. It exists in
clear only in memory (and, for the web session, re-encrypted by secmail.unlock).
"""
import json
from dataclasses import dataclass, field

from secmail import models, openpgp, smime
from secmail.errors import CryptoFailure


@dataclass
class UnlockedKey:
    own_key: models.OwnKey
    smime_key: object = None
    smime_cert: object = None
    smime_chain: list = field(default_factory=list)
    openpgp_secret: openpgp.SecretKey | None = None


def material_smime(key, chain) -> bytes:
    return json.dumps({"key": smime.private_key_pem(key).decode(), "chain": [smime.certificate_pem(c) for c in chain]}).encode()


def material_openpgp(secret: openpgp.SecretKey) -> bytes:
    return json.dumps({"secret": secret.armored, "passphrase": secret.passphrase}).encode()


def open_material(own_key, material: bytes) -> UnlockedKey:
    try:
        data = json.loads(material)
        if own_key.kind == models.SMIME:
            # public_data: the certificate, then any chain installed with it (actions.install_certificate)
            certs = smime.x509.load_pem_x509_certificates(own_key.public_data.encode()) if own_key.public_data else []
            return UnlockedKey(
                own_key,
                smime_key=smime.load_private_key(data["key"].encode()),
                smime_cert=certs[0] if certs else None,
                smime_chain=certs[1:] + [smime.load_certificate(c) for c in data.get("chain", [])],
            )
        return UnlockedKey(own_key, openpgp_secret=openpgp.SecretKey(data["secret"], data.get("passphrase", "")))
    except (ValueError, KeyError, TypeError):
        raise CryptoFailure("the stored key material is damaged") from None
