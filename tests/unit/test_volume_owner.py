"""A volume that is each user's own (`/scratch/{user}`) is used only when its directories belong to
the user (or to root, who made it for them): one that another user made first in a shared parent
is refused, naming the volume and the owner (issue 23, item 6)."""
from __future__ import annotations

import os
import pwd
from pathlib import Path

import pytest

from stardock_hpc.errors import UsageError
from stardock_hpc.jobs.mounts import parse_mount
from stardock_hpc.site import parse_site

VICTIM, OTHER = "nobody", "daemon"   # two users every Debian machine has
pytestmark = pytest.mark.root  # their directories are made with chown


def uid(user: str) -> int:
    return pwd.getpwnam(user).pw_uid


def site(path: str):
    return parse_site(f"volumes:\n  scratch: {{path: '{path}', mode: rw}}\n", Path("site.yaml"))


@pytest.fixture
def shared(tmp_path):
    """A world-writable sticky parent, like /scratch."""
    path = tmp_path / "scratch"
    path.mkdir()
    path.chmod(0o1777)
    tmp_path.chmod(0o755)
    return path


@pytest.mark.parametrize("owner, ok", [(VICTIM, True), ("root", True), (OTHER, False)])
def test_the_users_own_directory_must_be_theirs_or_roots(shared, owner, ok):
    mine = shared / VICTIM
    mine.mkdir()
    os.chown(mine, uid(owner), -1)
    if ok:
        assert parse_mount("scratch", site(f"{shared}/{{user}}"), VICTIM).root == mine
        return
    with pytest.raises(UsageError) as err:
        parse_mount("scratch", site(f"{shared}/{{user}}"), VICTIM)
    text = str(err.value)
    assert "volume 'scratch'" in text and f"belongs to {OTHER}, not to {VICTIM}" in text and str(mine) in text


@pytest.mark.parametrize("template", ["{shared}/{{user}}/data", "{shared}/u{{uid}}", "{shared}/{{user}}-x/y"])
def test_every_directory_from_the_users_part_on_is_checked(shared, template):
    path = Path(template.format(shared=shared).replace("{user}", VICTIM).replace("{uid}", str(uid(VICTIM))))
    path.mkdir(parents=True)
    for p in [path, *path.parents]:
        if p == shared:
            break
        os.chown(p, uid(VICTIM), -1)
    assert parse_mount("scratch", site(template.format(shared=shared)), VICTIM).root == path
    os.chown(path, uid(OTHER), -1)   # the last one someone else's (made there through a shared parent)
    with pytest.raises(UsageError, match=f"belongs to {OTHER}"):
        parse_mount("scratch", site(template.format(shared=shared)), VICTIM)


def test_a_link_another_user_made_in_the_users_place_is_refused(shared, tmp_path):
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    os.chown(theirs, uid(OTHER), -1)
    link = shared / VICTIM
    link.symlink_to(theirs)
    os.lchown(link, uid(OTHER), -1)
    with pytest.raises(UsageError, match=f"belongs to {OTHER}"):
        parse_mount("scratch:rw", site(f"{shared}/{{user}}"), VICTIM)


def test_a_volume_shared_by_everybody_is_not_the_users_own(shared):
    project = shared / "project"
    project.mkdir()
    os.chown(project, uid(OTHER), -1)   # a shared project directory: its owner is whoever made it
    assert parse_mount("scratch", site(str(project)), VICTIM).root == project
