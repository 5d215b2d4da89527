from django.contrib import admin

from metrics.models import MetricSeries


@admin.register(MetricSeries)
class MetricSeriesAdmin(admin.ModelAdmin):
    list_display = ["name", "rank", "kind", "run", "count", "last_value"]
    search_fields = ["name", "run__run_id"]
    readonly_fields = ["run", "experiment"]
