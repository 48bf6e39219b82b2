# stardock-hpc: the spec's build steps, run with bash -e in one shell
trap 'echo "stardock: build step failed (exit $?): $BASH_COMMAND" >&2' ERR
cd /opt/pipeline
python3 -m compileall -q .
