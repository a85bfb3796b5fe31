"""An interactive guest shell on the local terminal (``fsoracle vm shell``)."""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import sys
import termios
import tty

import paramiko


def interactive(transport: paramiko.Transport) -> int:
    """Open a login shell with a pty and pump bytes both ways until it exits."""
    cols, rows = shutil.get_terminal_size()
    chan = transport.open_session()
    chan.get_pty(term=os.environ.get("TERM", "vt100"), width=cols, height=rows)
    chan.invoke_shell()
    stdin = sys.stdin.fileno()
    is_tty = os.isatty(stdin)
    saved = termios.tcgetattr(stdin) if is_tty else None
    try:
        if is_tty:
            tty.setraw(stdin)
        while True:
            readable, _w, _x = select.select([chan, stdin], [], [], 0.5)
            if chan in readable:
                data = chan.recv(65536)
                if not data:
                    break
                os.write(sys.stdout.fileno(), data)
            if stdin in readable:
                data = os.read(stdin, 4096)
                if not data:
                    chan.shutdown_write()
                else:
                    chan.sendall(data)
            if chan.exit_status_ready() and not chan.recv_ready():
                break
    finally:
        if saved is not None:
            termios.tcsetattr(stdin, termios.TCSADRAIN, saved)
    status = chan.recv_exit_status()
    with contextlib.suppress(Exception):
        chan.close()
    return status
