"""manage.py spam train|learn|check: teach the content filter and try it on a folder.

- `spam train --spam|--ham MBOX [--account ADDRESS]` learns every message of an mbox
  file as spam or ham, for the account's filter and the site-wide one (without
  --account, the site-wide one only). A message learned before is not counted twice.
- `spam learn` learns users' pending judgements (moves into and out of Junk) now,
  as the periodic task does.
- `spam check ACCOUNT FOLDER` is a dry run: every message of the folder through the
  content rules and the account's filter, lists and thresholds as they are now (the
  authentication results are those recorded at delivery); nothing is moved or changed.
"""
import mailbox
import os

from django.core.management.base import CommandError

from accounts.management.cli import SubcommandCommand, table_lines
from antispam import actions, bayes, checks, policy

BATCH = 200


def _account(address):
    from accounts.models import Account

    localpart, _, domain = address.lower().rpartition("@")
    account = Account.objects.filter(localpart=localpart, domain__name=domain).first()
    if account is None:
        raise CommandError(f"no account {address}")
    return account


class Command(SubcommandCommand):
    help = "Train the content filter from mbox files, learn users' judgements, or dry-run a folder."

    def add_arguments(self, parser):
        subcommands = self.add_subcommands(parser)
        train = subcommands.add_parser("train", help="learn every message of an mbox file as spam or as ham")
        kind = train.add_mutually_exclusive_group(required=True)
        kind.add_argument("--spam", dest="mbox_spam", metavar="MBOX")
        kind.add_argument("--ham", dest="mbox_ham", metavar="MBOX")
        train.add_argument("--account", metavar="ADDRESS", help="train this account's filter too (default: site-wide only)")
        subcommands.add_parser("learn", help="learn users' pending moves into and out of Junk now")
        check = subcommands.add_parser("check", help="dry run: score every message of a folder, changing nothing")
        check.add_argument("account", metavar="ACCOUNT")
        check.add_argument("folder", metavar="FOLDER")

    def handle_train(self, *, mbox_spam, mbox_ham, account, **options):
        path = mbox_spam or mbox_ham
        if not os.path.isfile(path):
            raise CommandError(f"{path}: no such file")
        owner = _account(account).pk if account else None
        spam = mbox_spam is not None
        learned = total = 0
        batch = []
        for message in mailbox.mbox(path, create=False):
            raw = message.as_bytes()
            batch.append((bayes.tokens(raw), bayes.digest(raw)))
            total += 1
            if len(batch) == BATCH:
                learned += self._learn(owner, batch, spam)
                batch = []
        learned += self._learn(owner, batch, spam)
        scope = f"{account} and the site" if account else "the site"
        self.say(f"learned {learned} of {total} messages as {'spam' if spam else 'ham'} for {scope}")

    @staticmethod
    def _learn(owner, batch, spam):
        if not batch:
            return 0
        learned = bayes.learn_batch(None, batch, spam=spam)
        if owner is not None:
            learned = bayes.learn_batch(owner, batch, spam=spam)
        return learned

    def handle_learn(self, **options):
        learned = 0
        while (done := actions.learn_examples()) == actions.LEARN_BATCH:
            learned += done
        self.say(f"learned {learned + done} judgements")

    def handle_check(self, *, account, folder, **options):
        from antispam.models import Verdict
        from mailstore.actions import read_blob
        from mailstore.models import Folder

        owner = _account(account)
        box = Folder.objects.filter(account=owner, name=folder).first()
        if box is None:
            raise CommandError(f"{account} has no folder {folder}")
        messages = list(box.messages.select_related("blob").order_by("uid"))
        recorded = dict(
            Verdict.objects.filter(account=owner, blob_id__in=[m.blob_id for m in messages]).values_list("blob_id", "results")
        )
        rows, actions_seen = [("UID", "SCORE", "ACTION", "SUBJECT", "RULES")], {}
        for message in messages:
            raw = bytes(message.prefix) + read_blob(message.blob)
            assessment = checks.assess_content(raw, results=recorded.get(message.blob_id))
            decision = policy.decide(assessment, [owner])[owner.pk]
            actions_seen[decision.action] = actions_seen.get(decision.action, 0) + 1
            names = ",".join(f"{name}={points:g}" for name, points, _ in decision.rules) or "-"
            rows.append((str(message.uid), f"{decision.score:.1f}", decision.action, message.subject[:40], names))
        for line in table_lines(rows):
            self.stdout.write(line)
        summary = ", ".join(f"{count} {name}" for name, count in sorted(actions_seen.items())) or "no messages"
        self.say(f"{len(messages)} messages in {folder}: {summary} (dry run: nothing changed)")
