"""Entry point: the command group, and the one place where errors become exit codes."""

from __future__ import annotations

import sys
import traceback
from typing import Any

import click

from telecentre_ctl import __version__
from telecentre_ctl.errors import EXIT_FAILED, EXIT_INVALID, TelecentreError

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class TelecentreGroup(click.Group):
    """A click group that turns TelecentreError into the contract's exit codes."""

    def invoke(self, ctx: click.Context) -> Any:
        debug = bool(ctx.params.get("debug")) or "--debug" in sys.argv[1:]
        try:
            return super().invoke(ctx)
        except TelecentreError as err:
            if debug:
                traceback.print_exc()
            click.echo(f"error: {err}", err=True)
            ctx.exit(err.exit_code)
        except click.exceptions.Exit:
            raise
        except click.ClickException:
            raise
        except (KeyboardInterrupt, click.Abort):
            click.echo("interrupted", err=True)
            ctx.exit(130)
        except OSError as err:
            if debug:
                traceback.print_exc()
            click.echo(f"error: {err}", err=True)
            ctx.exit(EXIT_FAILED)
        except Exception as err:  # the last resort: say what happened without a traceback
            if debug:
                traceback.print_exc()
            click.echo(
                f"error: unexpected {type(err).__name__}: {err}\n"
                "  fix: run again with --debug for the traceback and report it",
                err=True,
            )
            ctx.exit(EXIT_FAILED)


@click.group(cls=TelecentreGroup, context_settings=CONTEXT_SETTINGS)
@click.version_option(__version__, prog_name="telecentre-ctl")
@click.option("--debug", is_flag=True, help="Show tracebacks on errors.")
def cli(debug: bool) -> None:
    """Deploy and run a rural telecentre's shared services (files, calendars, wiki,
    accounting, office) with Ansible and Docker.

    \b
    A site is a folder: site.yml (what to run), hosts.yml (where), secrets.yml (vault).
    Typical flow:
      telecentre-ctl init inventory/mysite        # answer a few questions
      telecentre-ctl validate inventory/mysite    # check it, no connection made
      telecentre-ctl plan inventory/mysite        # see what would be deployed
      telecentre-ctl lab up inventory/mysite      # rehearse on local lab hosts
      telecentre-ctl deploy inventory/mysite
      telecentre-ctl status inventory/mysite

    Exit codes: 0 ok, 1 failed or degraded, 2 invalid input, 3 host unreachable.
    """


def _register() -> None:
    # Imported here so that each command module stays light and self-contained.
    from telecentre_ctl.cli import commands

    for command in commands.ALL:
        cli.add_command(command)


_register()


def main() -> None:
    try:
        cli.main(prog_name="telecentre-ctl", standalone_mode=True)
    except SystemExit as exc:
        code = exc.code
        # click reports usage errors with exit code 2 already; keep the contract explicit.
        sys.exit(EXIT_INVALID if code == 2 else code)


if __name__ == "__main__":
    main()
