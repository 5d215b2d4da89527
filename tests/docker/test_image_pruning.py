"""Pruning of environment images: this site's images unused for a while go, the recently used ones,
those a container was created from, other sites' images and the base image stay; so do older
builds whose tag a rebuild took."""

from __future__ import annotations

import io
import os
import time
import uuid

import pytest

from trainhub.environments.docker_builder import (
    DEFAULT_BASE_IMAGE,
    LABEL_SDK,
    LABEL_SPEC,
    image_tag,
    prune_images,
    prune_superseded_images,
    record_image_use,
)

pytestmark = pytest.mark.slow

DAY = 86400


def distinct_image(client, tag: str) -> None:
    """An image of its own id under `tag` (a label on the base image: no layer to build)."""
    dockerfile = f"FROM {DEFAULT_BASE_IMAGE}\nLABEL trainhub.test-image={tag}\n"
    client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=tag, pull=False, rm=True)


def used_days_ago(cache_dir, digest: str, days: float) -> None:
    record_image_use(cache_dir, digest)
    when = time.time() - days * DAY
    os.utime(cache_dir / "docker-images" / digest, (when, when))


def test_unused_images_of_this_site_are_pruned_and_the_others_kept(docker_engine, tmp_path):
    client = docker_engine
    digests = {name: uuid.uuid4().hex * 2 for name in ("fresh", "recent", "stale", "stale-in-a-container", "theirs")}
    container = None
    try:
        for digest in digests.values():
            distinct_image(client, image_tag(digest))
        used_days_ago(tmp_path, digests["fresh"], 0)
        used_days_ago(tmp_path, digests["recent"], 3)
        used_days_ago(tmp_path, digests["stale"], 30)
        used_days_ago(tmp_path, digests["stale-in-a-container"], 40)
        container = client.containers.create(image_tag(digests["stale-in-a-container"]), ["true"])
        # "theirs": in the engine, never used by this site (another site's on a shared engine).

        assert prune_images(tmp_path, keep_days=7, keep_count=1) == [image_tag(digests["stale"])]

        left = {tag for image in client.images.list(name="trainhub-env") for tag in image.tags}
        assert image_tag(digests["stale"]) not in left
        assert {image_tag(digests[name]) for name in ("fresh", "recent", "stale-in-a-container", "theirs")} <= left
        assert client.images.get(DEFAULT_BASE_IMAGE)
        assert not (tmp_path / "docker-images" / digests["stale"]).exists()
        # The most recently used ones stay whatever their age.
        assert prune_images(tmp_path, keep_days=0, keep_count=3) == []
        # With nothing kept by age or count, only the image a container was created from stays.
        pruned = prune_images(tmp_path, keep_days=0, keep_count=0)
        assert pruned == [image_tag(digests["fresh"]), image_tag(digests["recent"])]
        assert client.images.get(image_tag(digests["stale-in-a-container"]))
    finally:
        if container is not None:
            container.remove(force=True)
        for digest in digests.values():
            try:
                client.images.remove(image_tag(digest), force=True)
            except Exception:  # pruned by the test already
                pass


def test_an_environment_image_whose_tag_a_rebuild_took_is_pruned(docker_engine):
    """A rebuild for a newer in-run SDK moves the tag to the new image; the old one, untagged, goes
    (unless a container was created from it). Untagged images of other kinds stay."""
    client = docker_engine
    tag = image_tag(uuid.uuid4().hex * 2)
    kept_tag = image_tag(uuid.uuid4().hex * 2)
    container = kept = not_ours = None
    try:
        superseded = labelled_image(client, tag, "sdk-1")
        labelled_image(client, tag, "sdk-2")
        kept = labelled_image(client, kept_tag, "sdk-1")
        container = client.containers.create(kept.id, ["true"])
        labelled_image(client, kept_tag, "sdk-2")
        not_ours = client.images.build(
            fileobj=io.BytesIO(f"FROM {DEFAULT_BASE_IMAGE}\nLABEL trainhub.test-untagged={tag}\n".encode()),
            pull=False,
            rm=True,
        )[0]

        removed = prune_superseded_images(older_than_seconds=0)

        assert superseded.short_id in removed and kept.short_id not in removed
        assert not [image for image in client.images.list(all=True) if image.id == superseded.id]
        assert client.images.get(kept.id) and client.images.get(not_ours.id) and client.images.get(tag)
        assert prune_superseded_images() == []  # what is younger than an hour waits
    finally:
        if container is not None:
            container.remove(force=True)
        for name in (tag, kept_tag):
            client.images.remove(name, force=True)
        for image in (kept, not_ours):
            if image is not None:
                client.images.remove(image.id, force=True)


def labelled_image(client, tag: str, sdk: str):
    """An environment image as the builder labels them, under `tag` (which it takes from any other)."""
    dockerfile = f"FROM {DEFAULT_BASE_IMAGE}\nLABEL {LABEL_SPEC}={tag.split(':')[1]} {LABEL_SDK}={sdk}\n"
    return client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=tag, pull=False, rm=True)[0]
