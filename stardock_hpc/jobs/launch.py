"""The launch: everything the node wrapper needs to start a job, decided at submission and
embedded in the job script as one line of JSON (so `scontrol write batch_script` shows the whole
job)."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional

from stardock_hpc.jobs.mounts import VolumeMount

FORMAT = 2


@dataclass
class Launch:
    engine: str
    entry: str                 # the cache entry directory
    artifact: str              # its artifact (shown; the node uses the entry's own, once checked)
    key: str
    name: str
    tag: str                   # Podman's local name for the image
    mounts: List[VolumeMount]  # bound as checked (jobs/binds.py)
    outputs: str               # site template: the per-job output directory goes under it
    records: str               # site template: the job records directory
    mount_root: str
    network: bool
    script: str                # the batch script, run inside the container
    script_name: str
    pass_env: List[str] = field(default_factory=list)
    export_env: List[str] = field(default_factory=list)   # the variables the job's --export names
    runtime_shim: Optional[str] = None
    command: Optional[List[str]] = None   # run this instead of the script (stardock shell)
    interactive: bool = False             # a terminal session (srun --pty)
    pids: int = 4096                      # process limit of the container (policy.limits.pids)
    entry_owner: int = -1                 # the entry's owner, trusted at submission (checked on the node)
    artifact_sha256: str = ""             # its artifact's digest at submission (checked on the node)
    node_network: bool = False            # policy.node_network: several nodes or MPI share the node's network
    node_storage: str = ""                # site template: the user's engine state on the node ("": the engines' own)
    node_storage_max: str = "20G"
    inputs: List[Dict[str, Any]] = field(default_factory=list)    # --input (jobs/staging.py JobInput)
    deliver: List[Dict[str, Any]] = field(default_factory=list)   # --deliver (jobs/staging.py Delivery)
    input_max_bytes: str = "10G"
    input_schemes: List[str] = field(default_factory=lambda: ["http", "https"])  # policy.inputs, on the node too
    input_hosts: List[str] = field(default_factory=list)
    input_cache_max: str = "10G"          # the user's download cache on a node (policy.inputs.cache_max)
    deliver_schemes: List[str] = field(default_factory=lambda: ["http", "https"])  # policy.deliveries
    deliver_hosts: List[str] = field(default_factory=list)
    retries: int = 3                      # of a download or a delivery (policy.inputs.retries)
    notebook_token: str = ""              # stardock notebook: its server's token (jobs/notebook.py)
    format: int = FORMAT

    def to_json(self) -> str:
        # One line, ASCII only: it sits in a here-document whose end marker cannot occur in it.
        data = dict(asdict(self), mounts=[m.to_json() for m in self.mounts])
        return json.dumps(data, sort_keys=True, ensure_ascii=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Launch:
        data = json.loads(text)
        if data.get("format") != FORMAT:
            raise ValueError(f"job spec format {data.get('format')!r}, this wrapper reads {FORMAT}")
        return cls(**dict(data, mounts=[VolumeMount.from_json(m) for m in data["mounts"]]))
