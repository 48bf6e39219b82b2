# stardock-hpc: the spec's build steps, run with bash -e in one shell
trap 'echo "stardock: build step failed (exit $?): $BASH_COMMAND" >&2' ERR
mkdir -p /opt/out
cd /opt/out
for i in 1 2 3; do echo "$i" >> counted; done
