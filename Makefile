# mailsuite: `make run` starts everything, `make test` runs the whole suite.
# Both set up what they need first (virtualenv, packages, migrations, TLS pair).

PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
export MAILSUITE_DATA_DIR ?= $(CURDIR)/var
PG_TEST_URL ?= postgres://postgres@127.0.0.1:5432/postgres

.PHONY: run test setup debs-run demo messages bench bench-smtp bench-smtp-parts bench-queue bench-imap bench-pop3 bench-spam bench-webmail debs-test clean

$(VENV)/.runtime: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
	touch $@

$(VENV)/.test: requirements-test.txt $(VENV)/.runtime
	$(PY) -m pip install -q --disable-pip-version-check -r requirements-test.txt
	touch $@

# Debian packages the server itself runs: gpg for OpenPGP (secmail).
DEBS_RUN := gnupg
debs-run:
	@dpkg -s $(DEBS_RUN) >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(DEBS_RUN) >/dev/null)

setup: $(VENV)/.runtime debs-run
	$(PY) manage.py migrate --noinput -v 0
	$(PY) manage.py tls ensure

run: setup
	$(PY) manage.py runmail

demo: setup
	$(PY) manage.py demo

# The Spanish catalogue (webmail/locale, in LOCALE_PATHS) holds the strings of every user-facing app;
# the admin, the API and the operators' pages stay English. The compiled .mo is committed.
I18N_IGNORE := accounts mailstore mta imap pop3 sieve api ops antispam mailsuite templates/admin tests bench docs var static
messages:
	@command -v xgettext >/dev/null || (DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends gettext >/dev/null)
	$(PY) manage.py makemessages -l es $(addprefix --ignore=,$(I18N_IGNORE))
	cd webmail && ../$(PY) ../manage.py compilemessages -l es

# Debian tools the end-to-end tests drive as real clients (clamav-daemon: the tests start
# their own clamd with a tiny signature database; the packaged service is not needed).
DEBS_TEST := swaks libnet-ssleay-perl libio-socket-ssl-perl fetchmail isync mutt chromium sieve-connect getmail6 dovecot-imapd clamav-daemon
debs-test:
	@dpkg -s $(DEBS_TEST) >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(DEBS_TEST) >/dev/null)

test: $(VENV)/.test debs-run debs-test
	$(PY) tests/run.py

# Benchmarks (not part of `make test`): results go to bench/RESULTS.md by hand.
bench: bench-smtp bench-queue bench-imap bench-pop3

bench-smtp: setup $(VENV)/.test
	@command -v postfix >/dev/null || (DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postfix >/dev/null)
	$(PY) bench/smtp_ingest.py

# One SMTP worker and the commit service measured apart: CPU per message of each.
bench-smtp-parts: setup $(VENV)/.test
	$(PY) bench/smtp_parts.py

bench-queue: setup $(VENV)/.test
	$(PY) bench/outbound_queue.py

# BENCH_IMAP_ARGS: e.g. --quick, or --database postgres
bench-imap: setup
	@command -v dovecot >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends dovecot-imapd >/dev/null)
	$(PY) bench/imap.py $(BENCH_IMAP_ARGS)

# BENCH_POP3_ARGS: e.g. -r 5, or -W logins -c 1,10,20
bench-pop3: setup
	@test -x /usr/lib/dovecot/pop3 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends dovecot-pop3d >/dev/null)
	$(PY) bench/pop3.py $(BENCH_POP3_ARGS)

# A thousand messages through the content filter (rules, Bayes, one recipient's verdict).
bench-spam: setup
	$(PY) bench/spam.py

# BENCH_WEBMAIL_ARGS: e.g. --sizes 10000 --repeat 10, or --database postgres
bench-webmail: setup
	$(PY) bench/webmail.py $(BENCH_WEBMAIL_ARGS)

clean:
	rm -rf $(VENV) var .pytest_cache
