"""The portal's registry pages: the models list with search, a model's versions, a version's
files, checksums, lineage and downloads, and the run page's list of versions made from it."""

from __future__ import annotations

import hashlib

import pytest

from tests.registry.builders import register, run_with_outputs

pytestmark = pytest.mark.django_db


@pytest.fixture
def versions(workspace, owner):
    run = run_with_outputs(workspace, {"outputs/model.pt": b"weights", "outputs/tok/vocab.txt": b"a b c"})
    register(workspace, owner, run, tags={"stage": "dev"})
    register(workspace, owner, run, tags={"stage": "prod"}, description="Second and better")
    register(workspace, owner, run, name="tokenizer", path="outputs/tok", tags={"team": "nlp"})
    return run


def test_the_models_list_shows_latest_versions_and_tags(client_for, reader, versions):
    page = client_for(reader).get("/w/birds/models/").content.decode()
    assert 'href="/w/birds/models/pytorch-birds/"' in page
    assert 'href="/w/birds/models/pytorch-birds/2/"' in page
    assert "stage=prod" in page and "stage=dev" not in page
    assert 'href="/w/birds/models/tokenizer/"' in page
    assert 'class="active">Models</a>' in page


@pytest.mark.parametrize(
    ("search", "shown", "hidden"),
    [
        ("token", "tokenizer", "pytorch-birds"),
        ("team", "tokenizer", "pytorch-birds"),
        ("stage=prod", "pytorch-birds", "tokenizer"),
        ("stage=dev", "pytorch-birds", "tokenizer"),
    ],
)
def test_the_models_list_searches_names_and_tags(client_for, reader, versions, search, shown, hidden):
    page = client_for(reader).get("/w/birds/models/", {"q": search}).content.decode()
    assert f'href="/w/birds/models/{shown}/"' in page
    assert f'href="/w/birds/models/{hidden}/"' not in page


def test_a_search_that_finds_nothing_says_so(client_for, reader, versions):
    page = client_for(reader).get("/w/birds/models/", {"q": "giraffe"}).content.decode()
    assert "No model matches “giraffe”" in page


def test_the_model_page_lists_its_versions(client_for, reader, versions):
    page = client_for(reader).get("/w/birds/models/pytorch-birds/").content.decode()
    assert page.index('href="/w/birds/models/pytorch-birds/2/"') < page.index('href="/w/birds/models/pytorch-birds/1/"')
    assert f'href="/w/birds/runs/{versions.run_id}/"' in page


def test_the_version_page_shows_files_checksums_lineage_and_downloads(client_for, reader, versions):
    page = client_for(reader).get("/w/birds/models/pytorch-birds/2/").content.decode()
    assert hashlib.sha256(b"weights").hexdigest() in page
    assert 'href="/w/birds/models/pytorch-birds/2/file?path=model.pt"' in page
    assert 'action="/w/birds/models/pytorch-birds/2/download"' in page
    assert "Download model.pt" in page
    assert f'href="/w/birds/runs/{versions.run_id}/" id="lineage-run"' in page
    assert "TrainHub-PyTorch-2.13-CPU" in page
    assert versions.snapshot.sha256[:12] in page
    assert "Second and better" in page
    assert "olivia" in page


def test_a_folder_version_offers_a_zip(client_for, reader, versions):
    page = client_for(reader).get("/w/birds/models/tokenizer/1/").content.decode()
    assert "Download tok/ as zip" in page
    assert 'href="/w/birds/models/tokenizer/1/file?path=tok/vocab.txt"' in page


def test_the_run_page_lists_the_versions_registered_from_it(client_for, reader, versions):
    page = client_for(reader).get(f"/w/birds/runs/{versions.run_id}/").content.decode()
    for link in ("pytorch-birds/1/", "pytorch-birds/2/", "tokenizer/1/"):
        assert f'href="/w/birds/models/{link}"' in page


def test_a_contributor_deletes_a_version_and_its_number_stays_taken(
    client_for, contributor, owner, workspace, versions
):
    response = client_for(contributor).post("/w/birds/models/pytorch-birds/2/delete/")
    assert response.status_code == 302 and response["Location"] == "/w/birds/models/pytorch-birds/"
    assert client_for(contributor).get("/w/birds/models/pytorch-birds/2/").status_code == 404
    assert register(workspace, owner, versions).version == 3


def test_a_model_whose_versions_are_all_deleted_leaves_the_list(client_for, owner, versions):
    client = client_for(owner)
    client.post("/w/birds/models/tokenizer/1/delete/")
    assert 'href="/w/birds/models/tokenizer/"' not in client.get("/w/birds/models/").content.decode()
    page = client.get("/w/birds/models/tokenizer/").content.decode()
    assert "The next one registered gets number 2" in page
