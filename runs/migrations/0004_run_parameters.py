from django.db import migrations, models

from runs.parameters import parameters_of


def fill(apps, schema_editor):
    Run = apps.get_model("runs", "Run")
    batch = []
    for run in Run.objects.only("pk", "arguments").iterator(chunk_size=2000):
        run.parameters = parameters_of(run.arguments or [])
        batch.append(run)
        if len(batch) >= 2000:
            Run.objects.bulk_update(batch, ["parameters"])
            batch = []
    Run.objects.bulk_update(batch, ["parameters"])


class Migration(migrations.Migration):
    dependencies = [
        ("runs", "0003_run_token_salt"),
    ]

    operations = [
        migrations.AddField(
            model_name="run",
            name="parameters",
            field=models.JSONField(blank=True, default=dict),
        ),
        migrations.RunPython(fill, migrations.RunPython.noop),
    ]
