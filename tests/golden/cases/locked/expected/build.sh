# stardock-hpc: the spec's build steps, in one bash shell (cd and variables carry over);
# each step runs through eval, so its own exit status stops the build, as a RUN's does
trap 'echo "stardock: build step failed (exit $?): $stardock_step" >&2' ERR
cd /  # where a Containerfile's RUN starts; so do the runs of both engines
stardock_step='echo built'
eval 'echo built'
