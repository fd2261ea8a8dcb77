"""The `coffer` command: global options, command registry, and the one place errors become exit codes."""

from __future__ import annotations

import signal
import sys
from typing import Any

import click

from coffer import __version__
from coffer.cli.globals import GlobalOptions
from coffer.errors import EXIT_FATAL, EXIT_INTERRUPTED, CofferError
from coffer.util.memory import skip_final_collection, tune_gc, tune_malloc


class LazyGroup(click.Group):
    """Commands are imported when invoked (or listed by --help), not at start-up."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        from coffer.cli.commands import command_names

        return command_names()

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        from coffer.cli.commands import load_command

        return load_command(cmd_name)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.option("-r", "--repo", "repo", default="", help="repository to use (env: COFFER_REPOSITORY / RESTIC_REPOSITORY)")
@click.option("--repository-file", default="", help="file to read the repository location from")
@click.option("-p", "--password-file", default="", help="file to read the repository password from")
@click.option("--password-command", default="", help="shell command to obtain the repository password from")
@click.option("--key-hint", default="", help="key ID of key to try decrypting first")
@click.option("--json", "json_", is_flag=True, help="set output mode to JSON for commands that support it")
@click.option("-q", "--quiet", is_flag=True, help="do not output comprehensive progress report")
@click.option("-v", "--verbose", count=True, help="be verbose (specify multiple times for more)")
@click.option("--no-lock", is_flag=True, help="do not lock the repository (only for read-only operations)")
@click.option("--retry-lock", default="", help="retry to lock the repository if it is already locked (e.g. 5m)")
@click.option("--no-cache", is_flag=True, help="do not use a local cache")
@click.option("--cache-dir", default="", help="set the cache directory")
@click.option("--compression", default="", help="compression mode: auto, off, fastest, better, max")
@click.option("--pack-size", default="", help="target pack size in MiB")
@click.option("-o", "--option", "options", multiple=True, help="set extended option (key=value)")
@click.version_option(__version__, prog_name="coffer")
@click.pass_context
def cli(ctx: click.Context, **kw: Any) -> None:
    """coffer: backups that prove themselves, in restic's repository format."""
    ctx.obj = GlobalOptions(
        repo=kw["repo"], repository_file=kw["repository_file"], password_file=kw["password_file"],
        password_command=kw["password_command"], key_hint=kw["key_hint"], json=kw["json_"],
        quiet=kw["quiet"], verbose=kw["verbose"], no_lock=kw["no_lock"], retry_lock=kw["retry_lock"],
        no_cache=kw["no_cache"], cache_dir=kw["cache_dir"], compression=kw["compression"],
        pack_size=kw["pack_size"], options=list(kw["options"]),
    )


# Global options may also follow the command name, as restic allows (`coffer backup -v ...`).
_GLOBAL_WITH_VALUE = {
    "-r", "--repo", "--repository-file", "-p", "--password-file", "--password-command", "--key-hint",
    "--retry-lock", "--cache-dir", "--compression", "--pack-size", "-o", "--option",
}
_GLOBAL_FLAGS = {"--json", "-q", "--quiet", "-v", "--verbose", "--no-lock", "--no-cache"}


def hoist_global_options(argv: list[str]) -> list[str]:
    """Move global options found after the command name in front of it, so click sees them."""
    from coffer.cli.commands import command_names, load_command

    names = set(command_names())
    try:
        pos = next(i for i, a in enumerate(argv) if a in names and (i == 0 or argv[i - 1] not in _GLOBAL_WITH_VALUE))
    except StopIteration:
        return argv
    head, rest = argv[: pos + 1], argv[pos + 1 :]
    # An option the command defines itself (pg-basebackup's --password-file: the database's) stays with it.
    cmd = load_command(argv[pos])
    own = {o for p in (cmd.params if cmd else []) for o in (*p.opts, *p.secondary_opts)}
    moved: list[str] = []
    kept: list[str] = []
    i = 0
    while i < len(rest):
        a = rest[i]
        if a == "--":
            kept.extend(rest[i:])
            break
        name = a.split("=", 1)[0]
        if name in own:
            kept.append(a)
            i += 1
            continue
        if name in _GLOBAL_WITH_VALUE:
            if "=" in a and a.startswith("--"):
                moved.append(a)
                i += 1
                continue
            moved.extend(rest[i : i + 2])
            i += 2
            continue
        if a in _GLOBAL_FLAGS or (len(a) > 2 and a[0] == "-" and a[1] != "-" and set(a[1:]) == {"v"}):
            moved.append(a)
        else:
            kept.append(a)
        i += 1
    return head[:-1] + moved + head[-1:] + kept


def _on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> None:
    # restic's `unlock` sends SIGHUP to test whether a lock holder on this host is alive;
    # the default action would kill us in the middle of a backup.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _on_sigterm)
    tune_malloc()
    tune_gc()
    args = hoist_global_options(list(sys.argv[1:] if argv is None else argv))
    try:
        _run(args)
    finally:
        skip_final_collection()


def _run(args: list[str]) -> None:
    try:
        rv = cli.main(args=args, prog_name="coffer", standalone_mode=False)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.ClickException as e:
        e.show()
        sys.exit(EXIT_FATAL)
    except (KeyboardInterrupt, click.exceptions.Abort):
        sys.stderr.write("signal interrupt received, cleaning up\n")
        sys.exit(EXIT_INTERRUPTED)
    except CofferError as e:
        sys.stderr.write(f"Fatal: {e.message}\n")
        if e.hint:
            sys.stderr.write(f"Hint: {e.hint}\n")
        sys.exit(e.exit_code)
    except BrokenPipeError:
        sys.exit(EXIT_FATAL)
    sys.exit(rv if isinstance(rv, int) else 0)


if __name__ == "__main__":
    main()
