"""`stardock import`: turn an existing recipe (Dockerfile / Containerfile, or an Apptainer /
Singularity .def) into an environment spec, listing everything that is not carried over.

spython's parsers were the plan, and were studied (0.3.14): they cannot be the reader. The
Docker parser crashes on `ENV K a b` (and splits `ENV K a b c` into K=a, b=c), reads a RUN, CMD
or COPY one physical line at a time (continued lines become separate commands, a two-line CMD
becomes its second line), takes `--chown=...` for a source file, splits `COPY ["a b", "/x"]`
at the space, turns USER into a shell line and ADD of a URL or archive into curl / `tar -zvf`
commands, and loses unnamed final stages. The Singularity parser strips indentation and blank
lines from %post (here-documents, Python snippets), writes %runscript and %test into the build
as `echo ... >> /entrypoint.sh` lines, drops %setup, files %help, %startscript and %app* as
comments, refuses non-docker Bootstrap types, keeps quotes in %environment values and drops its
non-assignment lines without a word. So the recipe is read here: recipe reads the file and
picks the format; dockerlex, docker (with dockercopy and buildcontext: COPY, ADD, .dockerignore)
and definition read the two formats (on what base shares); bases decides what the recipe's image
becomes on the site; shell and words read the shell text and Dockerfile words; rules (with
installs and state) decides what each command becomes; spec_builder collects the spec in the
recipe's order (checking each value as the spec would) and spec_yaml writes it.
tests/unit/test_import.py keeps checking spython's behaviour so the choice can be revisited.

Only the `stardock import` command imports this package.
"""
from stardock_hpc.importer.recipe import ImportResult, default_name, import_recipe
from stardock_hpc.importer.spec_builder import NotCarried
from stardock_hpc.importer.spec_yaml import render_yaml

__all__ = ["ImportResult", "NotCarried", "import_recipe", "render_yaml", "default_name"]
