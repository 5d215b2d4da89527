"""When squeue first said a run's Slurm job is running: a host whose task has not beaten some
seconds after it is lost (runs.slurm)."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("runs", "0011_run_value"),
    ]

    operations = [
        migrations.AddField(
            model_name="slurmjob",
            name="allocated_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
    ]
