"""docs/porting.md as a portal page: the rule and the table of v1 names, for signed-in users."""

from __future__ import annotations

import html


def test_the_porting_page_shows_the_rule_and_every_example(client_for, owner):
    response = client_for(owner).get("/docs/porting/")
    assert response.status_code == 200
    page = html.unescape(response.content.decode())
    assert "<td><code>azureml.core</code> (and <code>import azureml.core</code>)</td>" in page
    for example in ("distributed-pytorch-with-distributeddataparallel", "train-on-local", "onnx-train-pytorch"):
        assert example in page
    assert "<code>AzureML-acpt-pytorch-2.2-cuda12.1</code>" in page
