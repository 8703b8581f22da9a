"""``percept serve``: the Image Demo and Map Explorer web app."""

from __future__ import annotations

import sys

from percept.cli.common import positive_int
from percept.cli.predict import add_model_arguments, load_scoring
from percept.errors import PerceptError


def register(subparsers) -> None:
    parser = subparsers.add_parser("serve", help="web app: Image Demo and Map Explorer",
                                   description="Serve the Image Demo and the Map Explorer (JSON API docs at /docs).")
    add_model_arguments(parser)
    parser.add_argument("--rated", metavar="FILE", help="output of 'percept rate --locations' for the map")
    parser.add_argument("--images", metavar="DIR", help="survey images, for thumbnails of similar images")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=positive_int, default=8000, help="port (default 8000)")
    parser.add_argument("--tiles", metavar="URL", help="basemap tile URL template, e.g. "
                        "https://tile.openstreetmap.org/{z}/{x}/{y}.png (default: no basemap)")
    parser.add_argument("--tile-attribution", default="", metavar="TEXT", help="attribution shown for --tiles")
    parser.add_argument("--mapillary-token", metavar="TOKEN",
                        help="Mapillary access token (default: $MAPILLARY_TOKEN); without one nothing is fetched")
    parser.add_argument("--mapillary-url", metavar="URL",
                        help="Graph API base URL (default: https://graph.mapillary.com)")
    parser.add_argument("--max-upload-mb", type=positive_int, default=10, help="upload size cap (default 10)")
    parser.set_defaults(run=run)


def run(args) -> int:
    try:
        import uvicorn

        from percept.web.app import AppOptions, AppState, create_app
    except ImportError as exc:
        raise PerceptError(f"the web app needs its extras ({exc.name} is missing): pip install 'percept[web]'") from None
    from percept.city.mapillary import DEFAULT_BASE_URL, MapillaryClient, resolve_token
    from percept.city.rating import read_rated
    from percept.encoders import encode_pil_images
    from percept.model.estimates import Estimator
    from percept.web.images import ImageFolder
    from percept.web.names import sample_image_names

    model, scorer, encoder = load_scoring(args)
    token = resolve_token(args.mapillary_token)
    state = AppState(
        scorer=scorer,
        encode=lambda images: encode_pil_images(encoder, images),
        estimator=Estimator(model, scorer=scorer),
        rated=read_rated(args.rated) if args.rated else None,
        images=ImageFolder(args.images) if args.images else None,
        names=sample_image_names(model, scorer),
        mapillary=MapillaryClient(token, args.mapillary_url or DEFAULT_BASE_URL) if token else None,
        options=AppOptions(max_upload_bytes=args.max_upload_mb * 1024 * 1024, tile_url=args.tiles,
                           tile_attribution=args.tile_attribution),
    )
    print(f"serving on http://{args.host}:{args.port}/ (API docs at /docs)", file=sys.stderr)
    uvicorn.run(create_app(state), host=args.host, port=args.port, log_level="warning")
    return 0
