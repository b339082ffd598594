"""prune-images' decision (pure): newest per host by creation, references, the latest bake record."""

from __future__ import annotations

import pytest

from tasks.prune import decide
from tools.aws import AmiInfo
from tools.aws_refs import References, latest_bakes
from tools.errors import InvalidInput


def _image(image_id: str, host: str, created: str, state: str = "available", **tags: str) -> AmiInfo:
    return AmiInfo(image_id=image_id, state=state, created=created, tags={"host": host, **tags})


IMAGES = [
    _image("ami-1", "web", "2026-01-01T00:00:00.000Z"),
    _image("ami-2", "web", "2026-01-02T00:00:00.000Z"),
    _image("ami-3", "web", "2026-01-03T00:00:00.000Z"),
    _image("ami-4", "web", "2026-01-04T00:00:00.000Z", state="pending"),
    _image("ami-5", "db", "2026-01-01T00:00:00.000Z"),
]


def test_keeps_the_newest_per_host_and_referenced_ones_and_leaves_pending_images_alone() -> None:
    refs = References()
    refs.add("ami-1", "launch template lt-1 v1")
    rows = {r.image_id: (r.action, r.reason) for r in decide(IMAGES, refs, keep=1)}
    assert rows == {
        "ami-1": ("keep (referenced)", "launch template lt-1 v1"),
        "ami-2": ("deregister", ""),
        "ami-3": ("keep (newest)", ""),
        "ami-5": ("keep (newest)", ""),
    }
    assert {r.image_id for r in decide(IMAGES, refs, keep=1, hosts=["db"])} == {"ami-5"}


def test_the_latest_bake_record_is_the_newest_baked_at_even_for_an_old_image() -> None:
    reused = _image("ami-1", "web", "2026-01-01T00:00:00.000Z", baked_at="2026-02-01T00:00:00+00:00")
    images = [reused, *IMAGES[1:]]
    assert latest_bakes(images) == {"web": "ami-1", "db": "ami-5"}
    assert latest_bakes(IMAGES) == {"web": "ami-3", "db": "ami-5"}  # pending ami-4 is no bake record


def test_keep_below_one_is_rejected() -> None:
    with pytest.raises(InvalidInput, match="at least 1"):
        decide(IMAGES, References(), keep=0)


def test_each_row_names_the_bake_slot_of_its_content() -> None:
    """A deregister waits for the slot of the AMI's own content (the one a bake reusing it holds): the
    content hash from the tag, else the AMI name's suffix (an AMI left untagged by an interrupted bake)."""
    from tasks.limits import bake_limit_name

    tagged = _image("ami-1", "xwiki", "2026-01-01T00:00:00.000Z", content_hash="0123456789abcdef0123")
    untagged = AmiInfo(
        image_id="ami-2",
        name="xwiki_ubuntu-18.04_fedcba987654",
        state="available",
        created="2026-01-02T00:00:00.000Z",
        tags={"host": "xwiki"},
    )
    rows = {r.image_id: r for r in decide([tagged, untagged], References(), keep=1)}
    assert bake_limit_name(rows["ami-1"].host, rows["ami-1"].content_hash) == "bake-xwiki-0123456789ab"
    assert bake_limit_name(rows["ami-2"].host, rows["ami-2"].content_hash) == "bake-xwiki-fedcba987654"
