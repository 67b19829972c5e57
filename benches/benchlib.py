"""Helpers shared by the benchmark scripts in this directory (standard
library only): running a command, as the postgres user when we are root,
and picking a free loopback port."""
import os
import socket
import subprocess
import sys


def sh(cmd, env=None, check=True, capture=False, as_pg=False, stdin=None):
    """Run `cmd`; exit with its stderr if it fails and `check`. `as_pg` runs
    it as the postgres user when we are root (initdb and the server refuse
    root). stderr is always captured; stdout only with `capture`."""
    if as_pg and os.geteuid() == 0:
        cmd = ["runuser", "-u", "postgres", "--"] + cmd
    r = subprocess.run(cmd, env=env, check=False, stdout=subprocess.PIPE if capture else None,
                       stderr=subprocess.PIPE, stdin=stdin, text=True)
    if check and r.returncode != 0:
        sys.exit(f"command failed ({r.returncode}): {' '.join(map(str, cmd))}\n{r.stderr}")
    return r


def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
