"""coffer key: manage the keys (passwords) that open the repository."""

from __future__ import annotations

import getpass
import sys
from typing import Any

import click

from coffer.actions.session import LockMode
from coffer.cli.commands._restic_fmt import go_json, go_time_string, local_time, render_table
from coffer.cli.globals import GlobalOptions
from coffer.cli.output import Printer
from coffer.errors import UsageError
from coffer.store import keys
from coffer.store.format.keyfile import KeyFile


def read_new_password_file(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            pw = f.read().strip()  # restic 0.14 trims whitespace here
    except FileNotFoundError:
        raise UsageError(f"{path} does not exist") from None
    except OSError as e:
        raise UsageError(f"cannot read password file {path}: {e.strerror}") from None
    if not pw:
        raise UsageError(f"password file {path} is empty")
    return pw


def new_password(p: Printer, new_password_file: str) -> str:
    """From --new-password-file, else asked twice on a terminal, else one line of stdin (as restic)."""
    if new_password_file:
        return read_new_password_file(new_password_file)
    if not sys.stdin.isatty():
        line = sys.stdin.readline().rstrip("\r\n")
        p.print("reading repository password from stdin")
        if not line:
            raise UsageError("an empty password is not a password", hint="use --new-password-file")
        return line
    a = getpass.getpass("enter new password: ")
    b = getpass.getpass("enter password again: ")
    if a != b:
        raise UsageError("passwords do not match")
    if not a:
        raise UsageError("an empty password is not a password")
    return a


def _describe(kf: KeyFile) -> str:
    return f"<Key of {kf.username}@{kf.hostname}, created on {go_time_string(kf.created)}>"


_LOCKS: dict[str, LockMode] = {"list": "shared", "add": "shared", "remove": "exclusive", "passwd": "exclusive"}


@click.command("key")
@click.option("--new-password-file", default="", metavar="FILE", help="file from which to read the new password")
@click.option("--user", "user", default="", help="the username for new keys")
@click.option("--host", "host", default="", help="the hostname for new keys")
@click.argument("args", nargs=-1, metavar="[list|add|remove|passwd] [ID]")
@click.pass_obj
def command(g: GlobalOptions, new_password_file: str, user: str, host: str, args: tuple[str, ...]) -> int:
    """Manage keys (passwords) for accessing the repository.

    list: show the keys (the one in use is marked *); add: add a password; remove ID: delete
    another key; passwd: change the password in use (the new key is written before the old
    one is removed).
    """
    if not args or args[0] not in _LOCKS or (args[0] == "remove") != (len(args) == 2) or len(args) > 2:
        raise UsageError("wrong number of arguments")
    op = args[0]
    p = g.printer
    with g.open(lock=_LOCKS[op]) as repo:
        if op == "list":
            entries = keys.list_keys(repo, warn=p.warn)
            rows: list[dict[str, Any]] = [
                {"current": e.current, "id": e.id[:8], "userName": e.file.username, "hostName": e.file.hostname,
                 "created": local_time(e.file.created)}
                for e in entries
            ]
            if g.json:
                p.result(go_json(rows))
            else:
                table = render_table([" ID", "User", "Host", "Created"],
                                     [[("*" if r["current"] else " ") + r["id"], r["userName"], r["hostName"],
                                       r["created"]] for r in rows])
                for line in table:
                    p.result(line)
        elif op == "add":
            pw = new_password(p, new_password_file)
            kid = keys.add_key(repo, pw, username=user, hostname=host)
            p.print(f"saved new key as {_describe(keys.load_key(repo, kid))}")
        elif op == "remove":
            kid = keys.resolve_key_id(repo, args[1])
            keys.remove_key(repo, kid)
            p.print(f"removed key {kid}")
        else:
            pw = new_password(p, new_password_file)
            kid = keys.change_password(repo, pw, username=user, hostname=host)
            p.print(f"saved new key as {_describe(keys.load_key(repo, kid))}")
    return 0
