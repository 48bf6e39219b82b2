"""The patterns of the names and values a spec, the site config and the cache share (regular
expressions as text, matched whole). Apart from the spec so that what reads only the site or the
cache (a submission of a built image) does not load the spec's model."""

NAME_RE = r"[a-z0-9](?:[a-z0-9._-]{0,61}[a-z0-9])?"
NAME_HELP = ("use lowercase letters, digits, '.', '_' and '-', start and end with a letter or "
             "digit, at most 63 characters")
APP_RE = r"[a-z0-9][a-z0-9-]{0,62}"
BASE_RE = r"[a-z0-9][a-z0-9._/-]{0,127}(?::[A-Za-z0-9._-]{1,128})?"
APT_RE = r"[a-z0-9][a-z0-9+.-]{1,99}(?:=[A-Za-z0-9.+~:-]{1,100})?"
PIP_RE = (r"[A-Za-z0-9][A-Za-z0-9._-]*(?:\[[A-Za-z0-9._,-]+\])?"
          r"(?:\s*(?:===|==|!=|~=|>=|<=|<|>)\s*[A-Za-z0-9.*+!_-]+\s*,?)*")
ENV_KEY_RE = r"[A-Za-z_][A-Za-z0-9_]{0,127}"
LABEL_KEY_RE = r"[A-Za-z0-9][A-Za-z0-9._/-]{0,127}"
