"""Password hashing: Argon2id with the OWASP-recommended cost (19 MiB, t=2, p=1).

Django's default Argon2 cost (100 MiB, p=8) makes every IMAP/POP3/SMTP login
allocate 100 MiB; mail clients log in far more often than web users do.
"""
from django.contrib.auth.hashers import Argon2PasswordHasher


class MailArgon2PasswordHasher(Argon2PasswordHasher):
    algorithm = "argon2"
    time_cost = 2
    memory_cost = 19456
    parallelism = 1
