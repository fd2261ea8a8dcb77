"""coffer init: create a repository (restic format, version 2 by default)."""

from __future__ import annotations

import click

from coffer.cli.globals import GlobalOptions
from coffer.errors import UsageError
from coffer.store.backend.registry import open_backend
from coffer.store.repository import Repository


@click.command("init")
@click.option("--repository-version", default="stable", help="repository format version: 1, 2, latest or stable")
@click.option("--copy-chunker-params", is_flag=True, help="copy chunker parameters from --from-repo (dedup on copy)")
@click.option("--from-repo", default="", help="source repository for --copy-chunker-params")
@click.option("--from-password-file", default="", help="password file of the source repository")
@click.option("--from-password-command", default="", help="password command of the source repository")
@click.pass_obj
def command(g: GlobalOptions, repository_version: str, copy_chunker_params: bool, from_repo: str,
            from_password_file: str, from_password_command: str) -> int:
    """Initialize a new repository."""
    version = {"1": 1, "2": 2, "latest": 2, "stable": 2}.get(repository_version)
    if version is None:
        raise UsageError(f"invalid repository version {repository_version!r} (use 1, 2, latest or stable)")
    polynomial = None
    if copy_chunker_params:
        from coffer.actions.session import RepoAccess, open_repo
        from coffer.cli.globals import env, read_password_file, run_password_command

        src = from_repo or env("FROM_REPOSITORY")
        if not src:
            raise UsageError("--copy-chunker-params needs --from-repo")
        pf = from_password_file or env("FROM_PASSWORD_FILE")
        pc = from_password_command or env("FROM_PASSWORD_COMMAND")
        pw = run_password_command(pc) if pc else read_password_file(pf) if pf else env("FROM_PASSWORD")
        if not pw:
            raise UsageError("no password for --from-repo (use --from-password-file or COFFER_FROM_PASSWORD)")
        with open_repo(RepoAccess(url=src, password=pw), "none") as source:
            polynomial = source.config.chunker_polynomial
    url = g.repository()
    backend = open_backend(url, g.access(url).options)
    try:
        repo = Repository.init(backend, g.new_password(), version=version, polynomial=polynomial)
    finally:
        backend.close()
    if g.json:
        g.printer.json_line({"message_type": "initialized", "id": repo.config.id, "repository": url})
        return 0
    g.printer.print(f"created restic repository {repo.config.id[:10]} at {url}")
    g.printer.print()
    g.printer.print("Please note that knowledge of your password is required to access")
    g.printer.print("the repository. Losing your password means that your data is")
    g.printer.print("irrecoverably lost.")
    return 0
