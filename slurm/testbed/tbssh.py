"""The login node's sshd, as a site's users reach it: `stardock notebook` prints an `ssh -N -L
PORT:SOCKET user@login` tunnel, and the tests run exactly that command.

sshd listens on 127.0.0.1:2222 only, takes public keys only, and forwards to Unix sockets only
X. Each test user gets a key of
their own and an ~/.ssh/config that sends ssh to it (whatever name the machine gives itself) and
knows its host key: what a site's ssh configuration does for its users.
"""
from __future__ import annotations

import pwd
import subprocess
from pathlib import Path

from tbcommon import ETC, SCIENTISTS, run, write_if_changed

PORT = 2222
HOST_KEY = ETC / "ssh" / "ssh_host_ed25519_key"
CONFIG = ETC / "sshd_config"
ALIAS = "stardock-testbed-login"
USERS = SCIENTISTS


def sshd_config() -> str:
    return f"""\
# the testbed's login-node sshd (written by slurm/testbed/testbed up)
Port {PORT}
ListenAddress 127.0.0.1
HostKey {HOST_KEY}
PidFile none
AuthenticationMethods publickey
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM yes
PermitRootLogin no
AllowUsers {' '.join(USERS)}
AllowTcpForwarding local
AllowStreamLocalForwarding local
AllowAgentForwarding no
X11Forwarding no
StrictModes yes
"""


def user_config() -> str:
    return f"""\
# written by slurm/testbed/testbed up: ssh goes to the testbed's login node, as a site's config would
Host *
  HostName 127.0.0.1
  Port {PORT}
  HostKeyAlias {ALIAS}
  IdentityFile ~/.ssh/id_ed25519
  IdentitiesOnly yes
  BatchMode yes
  StrictHostKeyChecking yes
  UserKnownHostsFile ~/.ssh/known_hosts.testbed
  ExitOnForwardFailure yes
"""


def as_user(user: str, argv: list) -> None:
    pw = pwd.getpwnam(user)
    subprocess.run(argv, check=True, user=pw.pw_uid, group=pw.pw_gid, extra_groups=[], cwd=pw.pw_dir,
                   env={"HOME": pw.pw_dir, "PATH": "/usr/bin:/bin"}, stdout=subprocess.DEVNULL)


def prepare() -> bool:
    """Host key, config and the users' keys; True when something changed (sshd then restarts)."""
    changed = False
    HOST_KEY.parent.mkdir(mode=0o700, exist_ok=True)
    if not HOST_KEY.exists():
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", ALIAS, "-f", str(HOST_KEY)])
        changed = True
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation directory
    changed |= write_if_changed(CONFIG, sshd_config(), mode=0o600)
    host_pub = Path(f"{HOST_KEY}.pub").read_text().split()
    for user in USERS:
        pw = pwd.getpwnam(user)
        ssh = Path(pw.pw_dir) / ".ssh"
        if not ssh.is_dir():
            as_user(user, ["mkdir", "-m", "700", str(ssh)])
        key = ssh / "id_ed25519"
        if not key.exists():
            as_user(user, ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"{user}@testbed", "-f", str(key)])
            changed = True
        changed |= write_if_changed(ssh / "authorized_keys", Path(f"{key}.pub").read_text(), mode=0o600, owner=user)
        changed |= write_if_changed(ssh / "config", user_config(), mode=0o600, owner=user)
        changed |= write_if_changed(ssh / "known_hosts.testbed", f"{ALIAS} {host_pub[0]} {host_pub[1]}\n",
                                    mode=0o644, owner=user)
    return changed


def argv() -> list:
    return ["/usr/sbin/sshd", "-D", "-e", "-f", str(CONFIG)]


def port_open() -> bool:
    import socket

    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", PORT)) == 0
