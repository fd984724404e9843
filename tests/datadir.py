"""Migrated data dirs for manage.py children, made once per pass and copied.

Tests that run the real manage.py, as operators' scripts do, need a data dir with a migrated
SQLite database of their own. Running `manage.py migrate` for each of them took 20-40 s on a
loaded two-core machine. Instead, the first test process of a pass that needs one runs the real
`manage.py migrate` (asserting it succeeds) into a template beside the workers' data dirs, under
a lock so the other workers wait for it; every test then gets its own copy. The template's name
carries a digest of the migrations and settings, so a data dir kept between runs never serves
a stale schema.
"""
import fcntl
import hashlib
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

from tests import isolation

ROOT = Path(__file__).resolve().parent.parent
DATABASE = "mailsuite.sqlite3"
# The usual start of a command-line test: example.test and alice's mailbox (no password).
ALICE_AT_EXAMPLE = (("domain", "add", "example.test"), ("account", "add", "alice@example.test"))


def child_env(data_dir, **extra):
    """The environment of a manage.py child on `data_dir` and its SQLite file (not this pass's database)."""
    env = dict(os.environ, MAILSUITE_DATA_DIR=str(data_dir), **extra)
    env.pop("DATABASE_URL", None)
    env.pop("DJANGO_SETTINGS_MODULE", None)
    return env


def _schema_digest():
    digest = hashlib.sha256()
    sources = sorted(ROOT.glob("*/migrations/*.py")) + sorted(ROOT.glob("mailsuite/settings.py"))
    sources += sorted(ROOT.glob("mailsuite/db/*.py"))
    for path in sources:
        digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def _run(data_dir, *args):
    done = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT, env=child_env(data_dir), capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, f"manage.py {' '.join(args)}: {done.stderr}"


def _template(*commands):
    """The pass's data dir made by `manage.py migrate`, then `manage.py <command>` for each of
    `commands`; made once, by whichever test process asks first."""
    base = Path(isolation.pass_data_dir()) / "migrated-templates"
    base.mkdir(parents=True, exist_ok=True)
    with open(base / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the other workers wait here while one makes it
        return _made(base, commands)


def _made(base, commands):
    key = hashlib.sha256(repr(commands).encode()).hexdigest()[:8] if commands else "migrated"
    template = base / f"{_schema_digest()}-{key}"
    if not (template / ".made").exists():
        shutil.rmtree(template, ignore_errors=True)
        if commands:
            copy_data_dir(_made(base, ()), template)
        else:
            template.mkdir()
            _run(template, "migrate", "--no-input", "-v0")
        for command in commands:
            _run(template, *command)
        (template / ".made").touch()
    return template


def migrated_data_dir(path):
    """Make `path` a fresh data dir whose SQLite database `manage.py migrate` made; returns it."""
    return copy_data_dir(_template(), path)


def prepared_data_dir(path, *commands):
    """Like migrated_data_dir, then as if each of `commands` (argument tuples, e.g.
    ("domain", "add", "example.test")) had been run with manage.py: they run once per pass."""
    return copy_data_dir(_template(*commands), path)


def copy_data_dir(source, path):
    """Copy a data dir whose processes have all exited (its SQLite file among the rest) to `path`."""
    source, path = Path(source), Path(path)
    path.mkdir(parents=True, exist_ok=True)
    for entry in source.iterdir():
        if entry.name == ".made" or entry.name.startswith(DATABASE):
            continue
        if entry.is_dir():
            shutil.copytree(entry, path / entry.name)
        else:
            shutil.copy2(entry, path / entry.name)
    # SQLite's backup API: a consistent copy whatever the journal mode left beside the file.
    original = sqlite3.connect(source / DATABASE)
    copy = sqlite3.connect(path / DATABASE)
    try:
        original.backup(copy)
    finally:
        original.close()
        copy.close()
    return path
