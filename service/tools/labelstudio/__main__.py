"""`python -m service.tools.labelstudio`: start the bridge."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path

import httpx

from service.tools import labelstudio
from service.tools.labelstudio.bridge import Bridge
from service.tools.labelstudio.settings import BridgeSettings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m service.tools.labelstudio", description=labelstudio.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    parser.add_argument("--pickserve-url", help="PICKSERVE_URL")
    parser.add_argument("--pickserve-token", help="PICKSERVE_TOKEN (bridge role)")
    parser.add_argument("--label-studio-url", help="PICKSERVE_LABEL_STUDIO_URL")
    parser.add_argument("--token", dest="label_studio_token", help="Label Studio API token "
                        "(PICKSERVE_LABEL_STUDIO_TOKEN)")  # fmt: skip
    parser.add_argument("--project", help="project title (PICKSERVE_PROJECT)")
    parser.add_argument("--state", type=Path, help="the item → task map (PICKSERVE_STATE)")
    parser.add_argument("--webhook-host", help="PICKSERVE_WEBHOOK_HOST")
    parser.add_argument("--webhook-port", type=int, help="PICKSERVE_WEBHOOK_PORT (0: off)")
    parser.add_argument("--webhook-url", help="the receiver's URL as Label Studio reaches it")
    parser.add_argument("--open-tasks", type=int, help="unannotated tasks kept open")
    parser.add_argument("--poll-s", type=float, help="renew/fill interval")
    parser.add_argument("--sweep-s", type=float, help="sweep interval")
    parser.add_argument("--show-predictions", action="store_true", default=None)
    parser.add_argument(
        "--one-labeler", dest="annotators", action="store_false", default=None,
        help="post every annotation as the bridge token's own label (a token with the label "
        "role only); by default each annotator is a labeler",
    )  # fmt: skip
    args = {k: v for k, v in vars(parser.parse_args(argv)).items() if v is not None}
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        settings = BridgeSettings(**args)
    except Exception as error:
        print(f"error: {' '.join(str(error).split())}", file=sys.stderr)
        return 2
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request is noise
    try:
        bridge = Bridge(settings)
    except httpx.HTTPError as error:
        print(f"error: cannot reach pickserve or Label Studio: {error}", file=sys.stderr)
        return 2
    # SIGTERM (systemd, Kubernetes) and SIGINT end the loop after the step in hand. Set
    # here, not inherited: a shell starts a background job with SIGINT ignored.
    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, lambda *_: bridge.stop.set())
    bridge.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
