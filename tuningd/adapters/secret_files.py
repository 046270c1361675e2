"""Files that guard access: token files (refused when exposed) and the owner-only API socket."""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

from tuningd.core.errors import TuningdError

# Large enough for any bearer token, small enough that a wrong path (a log, a device) is not read.
MAX_TOKEN_FILE_BYTES = 64 * 1024


class TokenFileError(TuningdError):
    """A token file is missing, unreadable, exposed to group or others, empty or malformed.

    The message names the file and what to do; it never contains the file's contents. Callers
    prefix it with where the path came from (a config key, a command-line option)."""


def read_token_file(path: str, *, credentials_dir: str = "") -> str:
    """The token in `path` (surrounding whitespace dropped), checked on the descriptor it reads.

    The mode is taken with fstat on the open file, so a file swapped after the check is never
    the one read. Any permission bit for group or others is refused, not only read: a
    group-writable file lets the group choose the token, which is as good as knowing it.
    A file inside `credentials_dir` (systemd's $CREDENTIALS_DIRECTORY) is exempt from the mode
    check: systemd restricts it to the service itself, sometimes with an ACL whose mask shows
    as group bits."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK)
    except OSError as exc:
        raise TokenFileError(f"cannot read {path}: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise TokenFileError(f"{path} is not a regular file")
        mode = stat.S_IMODE(info.st_mode)
        if mode & (stat.S_IRWXG | stat.S_IRWXO) and not _inside(path, credentials_dir):
            raise TokenFileError(
                f"{path} is accessible by group or others (mode {mode:04o}); a token must be "
                f"readable by its owner only: run `chmod 600 {path}`")
        raw = os.read(fd, MAX_TOKEN_FILE_BYTES + 1)
    except OSError as exc:
        raise TokenFileError(f"cannot read {path}: {exc.strerror}") from None
    finally:
        os.close(fd)
    if len(raw) > MAX_TOKEN_FILE_BYTES:
        raise TokenFileError(f"{path} is larger than {MAX_TOKEN_FILE_BYTES} bytes; "
                             "it should hold one token")
    token = raw.strip()
    if not token:
        raise TokenFileError(f"{path} is empty")
    # The token travels in an HTTP header: anything but visible ASCII could never match.
    if any(byte < 0x21 or byte > 0x7E for byte in token):
        raise TokenFileError(f"{path} must hold one token of visible ASCII characters "
                             "(no spaces, line breaks or other characters inside it)")
    return token.decode("ascii")


def _inside(path: str, directory: str) -> bool:
    if not directory:
        return False
    # Both resolved, so neither a symlink into the directory nor ".." out of it counts wrongly.
    return os.path.realpath(path).startswith(os.path.realpath(directory) + os.sep)


def bind_private_unix_socket(path: str) -> socket.socket:
    """A listening-ready unix socket bound at `path` that only its owner can connect to.

    bind() creates the file with the process umask (0755 sockets accept anyone: connecting
    needs only write permission), so the umask is narrowed around the bind itself and the mode
    set again after it. The umask is process-wide, but the change only makes files other
    threads create in that instant stricter."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        old_umask = os.umask(0o177)
        try:
            sock.bind(path)
        finally:
            os.umask(old_umask)
        Path(path).chmod(0o600)
    except OSError:
        sock.close()
        raise
    return sock
