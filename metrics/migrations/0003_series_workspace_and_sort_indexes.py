"""Metric series carry their run's workspace, and both scopes sort by last, min or max through an index."""

import django.db.models.deletion
from django.db import migrations, models
from django.db.models import OuterRef, Subquery


def fill_workspaces(apps, schema_editor):
    MetricSeries = apps.get_model("metrics", "MetricSeries")
    Run = apps.get_model("runs", "Run")
    MetricSeries.objects.update(workspace_id=Subquery(Run.objects.filter(pk=OuterRef("run_id")).values("workspace_id")))


class Migration(migrations.Migration):
    dependencies = [
        ("metrics", "0002_metric_series_plural"),
        ("runs", "0007_run_cancel_reason_run_parent"),
        ("workspaces", "0001_initial"),
    ]

    operations = [
        migrations.RenameIndex(
            model_name="metricseries",
            new_name="series_experiment_last_value",
            old_name="series_experiment_sort",
        ),
        migrations.AddField(
            model_name="metricseries",
            name="workspace",
            field=models.ForeignKey(
                null=True, on_delete=django.db.models.deletion.CASCADE, related_name="+", to="workspaces.workspace"
            ),
        ),
        migrations.RunPython(fill_workspaces, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="metricseries",
            name="workspace",
            field=models.ForeignKey(
                on_delete=django.db.models.deletion.CASCADE, related_name="+", to="workspaces.workspace"
            ),
        ),
    ] + [
        migrations.AddIndex(
            model_name="metricseries",
            index=models.Index(fields=[scope, "name", "rank", value], name=f"series_{scope}_{value}"),
        )
        for scope, value in [
            ("experiment", "min_value"),
            ("experiment", "max_value"),
            ("workspace", "last_value"),
            ("workspace", "min_value"),
            ("workspace", "max_value"),
        ]
    ]
