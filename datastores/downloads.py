"""Downloads of datastore and dataset files, by content (each file is stored once per workspace)."""

from __future__ import annotations

from django.http import Http404, HttpRequest
from django.http.response import HttpResponseBase

from datastores.selectors import blob_get
from trainhub.downloads import file_response
from trainhub.workspaces.models import Workspace

BLOB_NOT_HERE = "No file with sha256 {sha!r} in this workspace's datastores."


def blob_download(request: HttpRequest, workspace: Workspace, sha256: str, filename: str = "") -> HttpResponseBase:
    """A content of the workspace's datastores, streamed (ranges, sha256 header); 404 when unknown."""
    blob = blob_get(workspace, sha256)
    if blob is None:
        raise Http404(BLOB_NOT_HERE.format(sha=sha256))
    name = filename.rsplit("/", 1)[-1] or sha256
    return file_response(request, storage_name=blob.storage_name, filename=name, size=blob.size, sha256=blob.sha256)
