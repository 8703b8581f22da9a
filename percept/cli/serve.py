"""``percept serve``: the Image Demo and Map Explorer web app."""

from __future__ import annotations

import argparse
import sys

from percept.cli.common import interval_level, positive_int, positive_number
from percept.cli.predict import add_model_arguments, load_scoring
from percept.extras import require


def port_number(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port from 0 (any free port) to 65535, got {text!r}")
    return value


def register(subparsers) -> None:
    parser = subparsers.add_parser("serve", help="web app: Image Demo and Map Explorer",
                                   description="Serve the Image Demo and the Map Explorer (JSON API docs at /docs).")
    add_model_arguments(parser)
    parser.add_argument("--rated", metavar="FILE", help="output of 'percept rate --locations' for the map")
    parser.add_argument("--images", metavar="DIR", help="survey images, for thumbnails of similar images")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=port_number, default=8000, help="port (default 8000; 0: any free port)")
    parser.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                        help="also answer requests for this host name (repeatable); requests naming any other "
                             "host than the bound one are refused, against DNS rebinding")
    parser.add_argument("--tiles", metavar="URL", help="basemap tile URL template, e.g. "
                        "https://tile.openstreetmap.org/{z}/{x}/{y}.png (default: no basemap)")
    parser.add_argument("--tile-attribution", default="", metavar="TEXT", help="attribution shown for --tiles")
    parser.add_argument("--mapillary-token", metavar="TOKEN",
                        help="Mapillary access token (default: $MAPILLARY_TOKEN); without one nothing is fetched")
    parser.add_argument("--mapillary-url", metavar="URL",
                        help="Graph API base URL (default: https://graph.mapillary.com)")
    parser.add_argument("--max-upload-mb", type=positive_number, default=10, metavar="MB",
                        help="largest image upload accepted (default 10)")
    parser.add_argument("--max-uploads", type=positive_int, default=32, metavar="N",
                        help="uploads received at once (default 32); more wait their turn, smallest first, taking "
                             "the place of an upload that has stopped sending; one that waits longer than "
                             "--read-timeout is answered 503 with Retry-After")
    parser.add_argument("--upload-memory-mb", type=positive_number, default=256, metavar="MB",
                        help="memory all uploads in flight may hold (default 256)")
    parser.add_argument("--read-timeout", type=positive_number, default=5.0, metavar="SECONDS",
                        help="longest wait for a request's headers or its body's next bytes (default 5); a body "
                             "must also average 16 kB/s after its first second; a slower upload is answered 408")
    parser.add_argument("--interval", type=interval_level, default=None, metavar="LEVEL",
                        help="coverage of the prediction interval shown with each score (default 0.9 where the "
                             "model holds a calibration; 0 turns intervals off)")
    parser.set_defaults(run=run)


def build_app(args):
    """The web app for parsed ``percept serve`` arguments."""
    for module in ("fastapi", "uvicorn", "python_multipart", "httpx"):
        require("web", module, "percept serve")
    from percept.city.mapillary import DEFAULT_BASE_URL, MapillaryClient, resolve_token
    from percept.data.rated_points import read_rated
    from percept.encoders import encode_pil_images
    from percept.model.estimates import Estimator
    from percept.web.app import AppOptions, AppState, create_app
    from percept.web.hosts import HostPolicy
    from percept.web.images import ImageFolder
    from percept.web.names import sample_image_names

    model, scorer, encoder = load_scoring(args)
    token = resolve_token(args.mapillary_token)
    state = AppState(
        scorer=scorer,
        encode=lambda images: encode_pil_images(encoder, images),
        estimator=Estimator(model, scorer=scorer, interval=args.interval),
        rated=read_rated(args.rated) if args.rated else None,
        images=ImageFolder(args.images) if args.images else None,
        names=sample_image_names(model, scorer),
        mapillary=MapillaryClient(token, args.mapillary_url or DEFAULT_BASE_URL) if token else None,
        options=AppOptions(max_upload_bytes=int(args.max_upload_mb * 1024 * 1024), tile_url=args.tiles,
                           tile_attribution=args.tile_attribution, max_uploads=args.max_uploads,
                           upload_memory=int(args.upload_memory_mb * 1024 * 1024), read_timeout=args.read_timeout,
                           hosts=HostPolicy.for_binding(args.host, tuple(args.allow_host))),
        model_name=encoder.name,
    )
    return create_app(state)


def exposure_warning(host: str, allowed: list[str]) -> str | None:
    """A warning for a server reachable from other machines that names no host to answer to."""
    import ipaddress

    name = host.strip().strip("[]").lower()
    try:
        loopback = name == "localhost" or ipaddress.ip_address(name).is_loopback
    except ValueError:
        loopback = False
    if allowed or loopback:
        return None
    return (f"warning: serving on {host}, reachable from other machines, without --allow-host: anyone who can "
            "reach this port may use the server, and browsers reaching it by a host name are refused; give "
            "--allow-host NAME for the name clients use, or serve on 127.0.0.1")


def run(args) -> int:
    from percept.web.server import ServerLimits, bind_socket, serve_socket, socket_url

    app = build_app(args)
    sock = bind_socket(args.host, args.port)
    print(f"serving on {socket_url(sock)} (API docs at /docs)", file=sys.stderr, flush=True)
    warning = exposure_warning(args.host, args.allow_host)
    if warning:
        print(warning, file=sys.stderr, flush=True)
    serve_socket(app, sock, ServerLimits(header_timeout=args.read_timeout))
    return 0
