from django.contrib import admin

from datastores.models import Dataset, DatasetVersion, Datastore

admin.site.register(Datastore, list_display=["name", "workspace", "created_at"])
admin.site.register(Dataset, list_display=["name", "workspace", "last_version"])
admin.site.register(DatasetVersion, list_display=["dataset", "version", "file_count", "size", "created_at"])
