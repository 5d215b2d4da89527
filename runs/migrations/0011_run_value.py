"""A run's parameter and tag cells as indexed rows (runs.models.RunValue), filled for the runs there are."""

import django.db.models.deletion
from django.db import migrations, models

from runs.parameters import table_values


def fill(apps, schema_editor):
    Run = apps.get_model("runs", "Run")
    RunValue = apps.get_model("runs", "RunValue")
    rows = []
    runs = Run.objects.only("pk", "workspace_id", "experiment_id", "parameters", "tags")
    for run in runs.iterator(chunk_size=2000):
        rows += [
            RunValue(run_id=run.pk, workspace_id=run.workspace_id, experiment_id=run.experiment_id, **value._asdict())
            for value in table_values(run.parameters or {}, run.tags or {})
        ]
        if len(rows) >= 5000:
            RunValue.objects.bulk_create(rows)
            rows = []
    RunValue.objects.bulk_create(rows)


class Migration(migrations.Migration):
    dependencies = [
        ("runs", "0010_run_table_sort_indexes"),
        ("workspaces", "0001_initial"),
    ]

    operations = [
        migrations.CreateModel(
            name="RunValue",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("kind", models.CharField(choices=[("param", "Parameter"), ("tag", "Tag")], max_length=5)),
                ("key", models.CharField(max_length=255)),
                ("value", models.TextField()),
                ("number", models.FloatField(blank=True, null=True)),
                ("text", models.CharField(blank=True, max_length=100)),
                (
                    "experiment",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE, related_name="+", to="runs.experiment"
                    ),
                ),
                (
                    "run",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE, related_name="table_values", to="runs.run"
                    ),
                ),
                (
                    "workspace",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE, related_name="+", to="workspaces.workspace"
                    ),
                ),
            ],
            options={
                "indexes": [
                    models.Index(
                        condition=models.Q(("number__isnull", False)),
                        fields=["workspace", "kind", "key", "number", "run"],
                        name="run_value_workspace_number",
                    ),
                    models.Index(
                        condition=models.Q(("number__isnull", False)),
                        fields=["experiment", "kind", "key", "number", "run"],
                        name="run_value_experiment_number",
                    ),
                    models.Index(
                        condition=models.Q(("number__isnull", True)),
                        fields=["workspace", "kind", "key", "text", "run"],
                        name="run_value_workspace_text",
                    ),
                    models.Index(
                        condition=models.Q(("number__isnull", True)),
                        fields=["experiment", "kind", "key", "text", "run"],
                        name="run_value_experiment_text",
                    ),
                ],
                "constraints": [
                    models.UniqueConstraint(fields=("run", "kind", "key"), name="one_value_per_run_column")
                ],
            },
        ),
        migrations.RunPython(fill, migrations.RunPython.noop),
    ]
