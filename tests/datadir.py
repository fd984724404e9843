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


def _template():
    base = Path(isolation.pass_data_dir()) / "migrated-templates"
    base.mkdir(parents=True, exist_ok=True)
    template = base / _schema_digest()
    done = template / ".migrated"
    with open(base / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the other workers wait here while one migrates
        if not done.exists():
            shutil.rmtree(template, ignore_errors=True)
            template.mkdir()
            migrated = subprocess.run(
                [sys.executable, "manage.py", "migrate", "--no-input", "-v0"],
                cwd=ROOT, env=child_env(template), capture_output=True, text=True, timeout=600,
            )
            assert migrated.returncode == 0, migrated.stderr
            done.touch()
    return template


def migrated_data_dir(path):
    """Make `path` a fresh data dir whose SQLite database `manage.py migrate` made; returns it."""
    return copy_data_dir(_template(), path)


def copy_data_dir(source, path):
    """Copy a data dir whose processes have all exited (its SQLite file among the rest) to `path`."""
    source, path = Path(source), Path(path)
    path.mkdir(parents=True, exist_ok=True)
    for entry in source.iterdir():
        if entry.name == ".migrated" or entry.name.startswith(DATABASE):
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
