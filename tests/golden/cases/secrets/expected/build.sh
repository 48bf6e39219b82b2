# stardock-hpc: the spec's build steps, in one bash shell (cd and variables carry over);
# each step runs through eval, so its own exit status stops the build, as a RUN's does
trap 'echo "stardock: build step failed (exit $?): $stardock_step" >&2' ERR
cd /  # where a Containerfile's RUN starts; so do the runs of both engines
stardock_step='git clone "https://oauth2:$(cat /run/secrets/gitlab-token)@gitlab.example.org/astro/tool.git" /opt/t...'
eval 'git clone "https://oauth2:$(cat /run/secrets/gitlab-token)@gitlab.example.org/astro/tool.git" /opt/tool'
stardock_step='LICENCE_KEY="$(cat /run/secrets/licence)" make -C /opt/tool install'
eval 'LICENCE_KEY="$(cat /run/secrets/licence)" make -C /opt/tool install'
