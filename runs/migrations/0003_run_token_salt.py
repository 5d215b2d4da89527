from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("runs", "0002_snapshot_files"),
    ]

    operations = [
        migrations.AddField(
            model_name="run",
            name="token_salt",
            field=models.CharField(blank=True, max_length=32),
        ),
    ]
