from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('webmail', '0003_contacts'),
    ]

    operations = [
        migrations.AddField(
            model_name='preferences',
            name='conversations',
            field=models.BooleanField(default=False),
        ),
    ]
