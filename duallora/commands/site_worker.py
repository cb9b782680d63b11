"""``duallora site-worker``: a site's long-lived worker, next to its Flower SuperNode.

    duallora site-worker --node-config NODE_CONFIG.toml
    duallora site-worker --client-name Siemens --data-dir /data/harmonized --state-dir /data/dl

Flower starts a fresh ClientApp process per message; the kit's ClientApp only relays each
message over the unix socket STATE_DIR/worker.sock to this worker, which keeps torch, the model,
the site's cohort, the prefix cache and the private state in memory (and the private state on
disk, so a restarted worker resumes). Start it with the same node config as the SuperNode
(`flower-supernode ... --node-config NODE_CONFIG.toml`), under the same user, and keep it
running (e.g. a systemd service with Restart=always); it stops on SIGTERM or Ctrl-C.
`flower-local` starts one per site by itself.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("site-worker", help="a site's long-lived worker that the Flower "
                            "ClientApp relays to", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--node-config", type=Path,
                        help="the SuperNode's node-config TOML (client-name, data-dir, "
                        "state-dir)")
    parser.add_argument("--client-name", help="the site's vendor (instead of --node-config)")
    parser.add_argument("--data-dir", type=Path, help="the site's harmonized cohort")
    parser.add_argument("--state-dir", type=Path, help="the site's node-local folder")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from duallora.flower.site.worker import run_worker

    return run_worker(args.node_config, {"client-name": args.client_name,
                                         "data-dir": args.data_dir, "state-dir": args.state_dir})
