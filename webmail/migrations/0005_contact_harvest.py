import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('accounts', '0004_apop_secret'),
        ('webmail', '0004_conversations'),
    ]

    operations = [
        migrations.CreateModel(
            name='ContactHarvest',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('marks', models.JSONField(default=dict, help_text='{"folder id": modseq}')),
                ('account', models.OneToOneField(on_delete=django.db.models.deletion.CASCADE, related_name='contact_harvest', to='accounts.account')),
            ],
        ),
        migrations.AlterField(
            model_name='contact',
            name='collected',
            field=models.BooleanField(default=False, help_text='Added from mail, not by hand'),
        ),
    ]
