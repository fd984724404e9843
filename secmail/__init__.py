"""Message security (issue 11): S/MIME and OpenPGP keys, sign/encrypt, verify/decrypt,
WKD and Autocrypt key discovery, and the webmail's keys page, badge and compose toggles.

Map: models (OwnKey, PeerKey, TrustedCA) · actions (the one write path) · sealing (private
keys at rest: scrypt → AES-256-GCM under the user's key passphrase) · unlock/session (keys
open for one web session) · mimeraw (byte-exact MIME) · smime (RFC 8551, with cryptography
and asn1crypto) · revocation (CRL and OCSP checks of S/MIME certificates) ·
openpgp/pgpmime (RFC 9580 via gpg, RFC 3156) · reader (what a message proves:
results.MessageSecurity) · outgoing (what a message becomes, protected subject included) ·
autocrypt · wkd · discovery (WKD lookups while composing) · addressbook (keys shown in
Contacts) · reading/compose/views (the webmail's side).

Libraries: cryptography builds and decrypts CMS; it does not verify CMS signatures, so
asn1crypto reads SignedData and cryptography checks the signature and the chain. OpenPGP
runs through GnuPG (Debian's gpg, the implementation the tests also use as the independent
tool) driven by python-gnupg, one throwaway GNUPGHOME per operation. PGPy was passed over
(its last release is from 2022); pysequoia was not adopted because gpg is already there
and is the tool the round-trip tests check against, and python-gnupg is a small, mature
wrapper. gpg is therefore a runtime dependency of the server (Debian package gnupg).
"""
