# DKIM signing keys (mta.dkim). Written by hand so that it holds DKIMKey alone.

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('accounts', '0003_send_as_grants'),
        ('mta', '0001_initial'),
    ]

    operations = [
        migrations.CreateModel(
            name='DKIMKey',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('selector', models.CharField(help_text='A DNS label: the key is at SELECTOR._domainkey.DOMAIN', max_length=63)),
                ('algorithm', models.CharField(choices=[('rsa-sha256', 'RSA 2048 (rsa-sha256)'), ('ed25519-sha256', 'Ed25519 (ed25519-sha256)')], max_length=16)),
                ('private_key', models.TextField(help_text='PKCS #8 PEM; secret')),
                ('public_key', models.TextField(help_text='The p= value of the DNS record (base64)')),
                ('state', models.CharField(choices=[('published', 'published (not signing yet)'), ('active', 'active (signs)'), ('retired', 'retired (no longer signs)')], default='published', max_length=16)),
                ('created', models.DateTimeField(auto_now_add=True)),
                ('activated', models.DateTimeField(blank=True, help_text='When it last started signing', null=True)),
                ('retired', models.DateTimeField(blank=True, help_text='When it stopped signing', null=True)),
                ('domain', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='dkim_keys', to='accounts.domain')),
            ],
            options={
                'verbose_name': 'DKIM key',
                'ordering': ['-created', 'selector'],
                'constraints': [
                    models.UniqueConstraint(fields=('domain', 'selector'), name='dkimkey_unique_selector'),
                    models.UniqueConstraint(condition=models.Q(('state', 'active')), fields=('domain', 'algorithm'), name='dkimkey_one_active_per_algorithm'),
                    models.CheckConstraint(condition=models.Q(('algorithm__in', ['rsa-sha256', 'ed25519-sha256'])), name='dkimkey_algorithm_known'),
                    models.CheckConstraint(condition=models.Q(('state__in', ['published', 'active', 'retired'])), name='dkimkey_state_known'),
                ],
            },
        ),
    ]
