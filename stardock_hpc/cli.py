"""The `stardock` command: parse, call, print. Errors are caught once, in main().

Each command's module is imported only when that command runs (LazyGroup): a command pays for
what it uses, not for the importer, the REST client or the doctor. `stardock --version` does
not even load click.
"""
from __future__ import annotations

import sys
from typing import Any, Callable, Dict, List, Optional, Tuple

from stardock_hpc import __version__

# name -> (module, attribute, the one line `stardock --help` shows)
COMMANDS: Dict[str, Tuple[str, str, str]] = {
    "apps": ("stardock_hpc.commands.envs", "apps", "List the app catalog."),
    "build": ("stardock_hpc.commands.images", "build", "Build SPEC unless the shared cache already has it."),
    "cancel": ("stardock_hpc.commands.jobs", "cancel", "Cancel a job; nothing of it remains."),
    "deps": ("stardock_hpc.commands.deps", "deps_cmd", "Find the Debian packages your own programs need."),
    "doctor": ("stardock_hpc.commands.doctor", "doctor", "Check this machine, the site config and Slurm."),
    "exec": ("stardock_hpc.commands.jobs", "exec_cmd", "Run one command in an environment, here."),
    "images": ("stardock_hpc.commands.images", "images", "List the shared cache's images (or inspect / prune)."),
    "import": ("stardock_hpc.commands.importcmd", "import_recipe_cmd", "Turn a Dockerfile or .def into a spec."),
    "lock": ("stardock_hpc.commands.images", "lock_cmd", "Write stardock.lock: exact versions of an image."),
    "logs": ("stardock_hpc.commands.jobs", "logs", "Print a job's output file."),
    "notebook": ("stardock_hpc.commands.notebook", "notebook_cmd", "JupyterLab in an environment, as a Slurm job."),
    "outputs": ("stardock_hpc.commands.jobs", "outputs", "Pack a job's output directory."),
    "render": ("stardock_hpc.commands.envs", "render", "Render a spec as an Apptainer def or a Containerfile."),
    "sbatch": ("stardock_hpc.commands.sbatch", "click_command", "Submit a batch script to run in an environment."),
    "schema": ("stardock_hpc.commands.envs", "schema", "Print the JSON Schema of the spec or the site config."),
    "shell": ("stardock_hpc.commands.jobs", "shell", "An interactive shell in an environment, on a node."),
    "site": ("stardock_hpc.commands.sitecmd", "site_group", "Show or check the site config."),
    "status": ("stardock_hpc.commands.jobs", "status", "State, exit code, MaxRSS, image and mounts of jobs."),
}


def version_text() -> str:
    return f"stardock, version {__version__}"


def cli() -> Any:
    """The click group, built on first use (click itself costs more than the whole of --version)."""
    import importlib

    import click

    from stardock_hpc.commands.options import State, common_options

    class LazyGroup(click.Group):
        def list_commands(self, ctx: click.Context) -> List[str]:
            return sorted(COMMANDS)

        def get_command(self, ctx: click.Context, cmd_name: str) -> Optional[click.Command]:
            if cmd_name not in COMMANDS:
                return None
            module, attribute, _summary = COMMANDS[cmd_name]
            found = getattr(importlib.import_module(module), attribute)
            command: click.Command = found if isinstance(found, click.Command) else found()  # or its factory
            return command

        def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
            with formatter.section("Commands"):
                formatter.write_dl([(name, COMMANDS[name][2]) for name in sorted(COMMANDS)])

    @click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
    @click.version_option(__version__, prog_name="stardock", message=version_text())
    @common_options
    @click.pass_context
    def group(ctx: click.Context) -> None:
        """Ship the software to the data: build a container environment from one YAML file and run
        it as a Slurm batch job, rootless."""
        ctx.ensure_object(State)

    return group


def main(argv: Optional[list] = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args == ["--version"]:
        print(version_text())
        sys.exit(0)
    if args[:1] == ["sbatch"] and not {"-h", "--help"} & set(args):
        # the hot path: sbatch's arguments are its own, click would only cost its import
        from stardock_hpc.commands.sbatch import run
        guarded(lambda: run(args[1:]), "--debug" in args)

    guarded(lambda: cli().main(args=args, prog_name="stardock", standalone_mode=False), "--debug" in args)


def guarded(call: Callable[[], object], debug: bool) -> None:
    """Run a command and exit: 0, or the error's message and exit code (a traceback only with --debug)."""
    from stardock_hpc.errors import EXIT_FAILED, EXIT_USAGE, StardockError

    try:
        call()
    except StardockError as exc:
        if debug:
            import traceback
            traceback.print_exc()
        err(f"stardock: error: {exc}")
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err("stardock: interrupted")
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - the one place that turns surprises into a message
        click = sys.modules.get("click")
        if click is not None and isinstance(exc, click.exceptions.Exit):
            sys.exit(exc.exit_code)
        if click is not None and isinstance(exc, click.exceptions.Abort):
            err("stardock: aborted")
            sys.exit(130)
        if click is not None and isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(EXIT_USAGE if isinstance(exc, click.UsageError) else exc.exit_code)
        if debug:
            import traceback
            traceback.print_exc()
        err(f"stardock: internal error: {exc.__class__.__name__}: {exc}\n"
            "  (run again with --debug for the traceback, and please report it)")
        sys.exit(EXIT_FAILED)
    sys.exit(0)


def err(text: str) -> None:
    print(text, file=sys.stderr, flush=True)
