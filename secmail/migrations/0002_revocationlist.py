import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('accounts', '0004_apop_secret'),
        ('secmail', '0001_initial'),
    ]

    operations = [
        migrations.CreateModel(
            name='RevocationList',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('issuer', models.CharField(help_text="The CRL issuer's name, for display", max_length=500)),
                ('issuer_key', models.CharField(help_text="SHA-256 of the issuer name's DER (secmail.revocation.name_key)", max_length=64)),
                ('der', models.BinaryField()),
                ('this_update', models.DateTimeField()),
                ('next_update', models.DateTimeField(blank=True, null=True)),
                ('entries', models.PositiveIntegerField(default=0, help_text='Revoked certificates listed')),
                ('created', models.DateTimeField(auto_now_add=True)),
                ('account', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.CASCADE, related_name='secmail_crls', to='accounts.account')),
            ],
            options={
                'ordering': ['issuer'],
                'constraints': [models.UniqueConstraint(fields=('account', 'issuer_key'), name='secmail_crl_unique'), models.UniqueConstraint(condition=models.Q(('account__isnull', True)), fields=('issuer_key',), name='secmail_crl_operator_unique')],
            },
        ),
    ]
