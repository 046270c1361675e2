"""Token files and the API socket on a real filesystem: exposed, odd and good files."""

from __future__ import annotations

import os
import socket
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from tuningd.adapters.secret_files import (
    MAX_TOKEN_FILE_BYTES,
    TokenFileError,
    bind_private_unix_socket,
    read_token_file,
)

TOKEN = "tok-9f8e7d6c5b4a"


def token_file(tmp_path: Path, content: bytes, mode: int = 0o600) -> Path:
    path = tmp_path / "token"
    path.write_bytes(content)
    path.chmod(mode)
    return path


@pytest.mark.parametrize("mode", [0o400, 0o600, 0o700])
def test_owner_only_file_is_read(tmp_path: Path, mode: int) -> None:
    """A file only its owner can access gives its token, surrounding whitespace dropped."""
    assert read_token_file(str(token_file(tmp_path, f"  {TOKEN}\r\n".encode(), mode))) == TOKEN


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620, 0o602, 0o610, 0o666])
def test_exposed_file_is_refused_with_the_chmod(tmp_path: Path, mode: int) -> None:
    """Any permission for group or others is refused; the message shows the mode and the exact
    chmod, and never the token."""
    path = token_file(tmp_path, TOKEN.encode(), mode)
    with pytest.raises(TokenFileError) as info:
        read_token_file(str(path))
    message = info.value.message
    assert f"chmod 600 {path}" in message and f"mode {mode:04o}" in message
    assert TOKEN not in message


def test_symlink_is_judged_by_its_target(tmp_path: Path) -> None:
    """A symlink (always 0777 itself) to an owner-only file is fine; to an exposed one is not."""
    target = token_file(tmp_path, TOKEN.encode())
    link = tmp_path / "link"
    link.symlink_to(target)
    assert read_token_file(str(link)) == TOKEN
    target.chmod(0o644)
    with pytest.raises(TokenFileError, match="chmod 600"):
        read_token_file(str(link))


def test_systemd_credentials_are_trusted_only_inside_the_directory(tmp_path: Path) -> None:
    """A file in $CREDENTIALS_DIRECTORY passes whatever its mode bits (systemd may grant the
    service through an ACL, shown as group bits); a look-alike sibling directory and a link in
    the directory to an exposed file elsewhere do not."""
    creds = tmp_path / "credentials"
    creds.mkdir()
    inside = creds / "api-token"
    inside.write_text(TOKEN)
    inside.chmod(0o440)
    assert read_token_file(str(inside), credentials_dir=str(creds)) == TOKEN
    sibling = tmp_path / "credentials-evil"
    sibling.mkdir()
    lookalike = token_file(sibling, TOKEN.encode(), 0o644)
    outside = token_file(tmp_path, TOKEN.encode(), 0o644)
    link = creds / "link"
    link.symlink_to(outside)
    for path in (lookalike, link):
        with pytest.raises(TokenFileError, match="chmod 600"):
            read_token_file(str(path), credentials_dir=str(creds))
    with pytest.raises(TokenFileError, match="chmod 600"):
        read_token_file(str(inside))


@pytest.mark.parametrize(("content", "problem"), [
    (b"", "is empty"),
    (b" \n\t\n", "is empty"),
    (b"two words", "visible ASCII"),
    (b"line1\nline2", "visible ASCII"),
    ("t\u00f6ken".encode(), "visible ASCII"),
    (b"\xff\xfe", "visible ASCII"),
    (b"x" * (MAX_TOKEN_FILE_BYTES + 1), "larger than"),
])
def test_malformed_content_is_refused(tmp_path: Path, content: bytes, problem: str) -> None:
    """Empty, multi-word, multi-line, non-ASCII, undecodable and huge files are refused by name
    (before, a non-UTF-8 file ended in a UnicodeDecodeError traceback)."""
    path = token_file(tmp_path, content)
    with pytest.raises(TokenFileError, match=problem) as info:
        read_token_file(str(path))
    assert str(path) in info.value.message


def test_missing_directory_and_fifo_are_refused(tmp_path: Path) -> None:
    """A missing path, a directory and a FIFO (which would block a reader) are refused."""
    with pytest.raises(TokenFileError, match="No such file"):
        read_token_file(str(tmp_path / "absent"))
    with pytest.raises(TokenFileError, match="not a regular file"):
        read_token_file(str(tmp_path))
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo, 0o600)
    with pytest.raises(TokenFileError, match="not a regular file"):
        read_token_file(str(fifo))


@pytest.fixture
def wide_umask() -> Iterator[None]:
    """The most permissive umask, as a careless shell or service manager might leave it."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def test_api_socket_is_owner_only_whatever_the_umask(tmp_path: Path, wide_umask: None) -> None:
    """Under umask 000 the socket file is still 0600 and accepts connections from its owner;
    the umask is back to what it was afterwards."""
    path = tmp_path / "api.sock"
    sock = bind_private_unix_socket(str(path))
    try:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_ISSOCK(path.stat().st_mode)
        sock.listen()
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.connect(str(path))
        assert os.umask(0) == 0
    finally:
        sock.close()


def test_socket_bind_failure_closes_and_raises(tmp_path: Path) -> None:
    """A path whose directory does not exist raises OSError (the daemon turns it into a config
    error naming server.socket)."""
    with pytest.raises(OSError):
        bind_private_unix_socket(str(tmp_path / "missing" / "api.sock"))
