"""The web app: the Image Demo (score a photo) and the Map Explorer (rated locations), with a JSON API."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from PIL import Image
from pydantic import BaseModel

from percept.city.mapillary import MapillaryClient, MapillaryError
from percept.city.spatial_index import SpatialIndex
from percept.data.decode import ImageError, ImageLimits, ImageTooLarge, ImageUnsupported
from percept.data.rated_points import RatedPoints
from percept.data.vector_checks import BadVectors, refuse_unusable
from percept.errors import PerceptError
from percept.model.estimates import Estimator
from percept.model.knn import l2_normalise
from percept.model.scoring import MultiScorer
from percept.web.admission import UploadGate
from percept.web.decoding import BoundedDecoder
from percept.web.docs import redoc_page, swagger_ui_page
from percept.web.hosts import HostCheck, HostPolicy
from percept.web.images import ImageFolder, thumbnail_jpeg
from percept.web.markers import Markers, group_markers, thin_evenly
from percept.web.neighbour_shares import distance_shares, vector_weights
from percept.web.security import SecurityHeaders, image_sources, page_policy
from percept.web.upload import BodyPace, MissingField, UploadRefused, read_upload

STATIC = Path(__file__).resolve().parent / "static"
#: Seconds a client refused as busy is asked to wait before it tries again.
RETRY_AFTER_S = 2

Encode = Callable[[list[Image.Image]], np.ndarray]


class Category(StrEnum):
    """A perception category, as the routes take it (the members are :data:`percept.categories.CATEGORIES`)."""

    walkability = "walkability"
    bikeability = "bikeability"
    pleasantness = "pleasantness"
    greenness = "greenness"
    safety = "safety"


@dataclass
class AppOptions:
    """Limits and page settings."""

    max_upload_bytes: int = 10 * 1024 * 1024
    image_limits: ImageLimits = field(default_factory=ImageLimits)
    decode_workers: int = 2
    decode_pixels: int | None = None
    max_uploads: int = 32  # bodies received at once
    upload_memory: int = 256 * 1024 * 1024  # body bytes all uploads in flight may hold
    read_timeout: float = 5.0  # longest wait for a request's headers or its body's next bytes
    min_upload_rate: float = 16 * 1024  # bytes a second a body must average after its first second
    hosts: HostPolicy | None = None
    max_radius_m: float = 5000.0
    default_radius_m: float = 100.0
    listed_points: int = 25
    rated_limit: int = 5000
    max_rated_limit: int = 20000
    tile_url: str | None = None
    tile_attribution: str = ""


@dataclass
class AppState:
    scorer: MultiScorer
    encode: Encode | None
    estimator: Estimator  # the scorer's predictions with their uncertainty
    rated: RatedPoints | None = None
    images: ImageFolder | None = None
    names: list[str | None] | None = None
    mapillary: MapillaryClient | None = None
    options: AppOptions = field(default_factory=AppOptions)
    model_name: str | None = None


class Problem(BaseModel):
    """A refused request: one line naming the problem and what to do."""

    detail: str


class ValidationProblem(BaseModel):
    """A missing or out-of-range parameter (where, and why), or an image without a usable vector (one line)."""

    detail: list[dict[str, Any]] | str


ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": Problem, "description": "The request cannot be used (a corrupt image, a category this "
                                           "server has no scores for, an empty box)"},
    404: {"model": Problem, "description": "No such survey image"},
    403: {"model": Problem, "description": "The request comes from a page of another site (its Origin header)"},
    408: {"model": Problem, "description": "The upload arrived too slowly, or stopped"},
    413: {"model": Problem, "description": "The upload or its image is larger than the server's limits"},
    415: {"model": Problem, "description": "Not an image format that is read, or not multipart/form-data"},
    421: {"model": Problem, "description": "The Host header names another server (see --allow-host)"},
    422: {"model": ValidationProblem, "description": "A parameter or form field is missing or out of range, or "
                                                     "the image gives no usable vector (NaN, infinite or zero)"},
    503: {"model": Problem, "description": "This server has no image encoder, or is busy with other uploads "
                                           "(try again after the Retry-After header's seconds)"},
}

UPLOAD_BODY = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["image"],
    "properties": {"image": {"type": "string", "format": "binary",
                             "description": "a JPEG, PNG, WebP, BMP, TIFF or GIF image"}}}}}}}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI responses for these error statuses (and 421, which any route may answer)."""
    return {status: ERRORS[status] for status in (*statuses, 421)}


def error_status(exc: PerceptError) -> int:
    if isinstance(exc, ImageTooLarge):
        return 413
    if isinstance(exc, ImageUnsupported):
        return 415
    return 400


def create_app(state: AppState) -> FastAPI:
    """Build the FastAPI app for a scorer, an image encoder and (optionally) rated locations."""
    options = state.options
    decoder = BoundedDecoder(options.image_limits, options.decode_workers, options.decode_pixels)
    gate = UploadGate(options.max_uploads, options.upload_memory, idle_drop=min(0.5, options.read_timeout / 4),
                      patience=options.read_timeout)
    gate.on_empty = decoder.release_memory_soon  # a burst of uploads is over: hand its memory back
    pace = BodyPace(options.read_timeout, options.min_upload_rate)

    @asynccontextmanager
    async def lifespan(_app):
        yield
        decoder.shutdown()

    app = FastAPI(title="Percept KNN", description="Score street images in five perception categories.",
                  version="1", docs_url=None, redoc_url=None, lifespan=lifespan)
    rated = state.rated
    index = markers = marker_index = None
    if rated is not None:
        index = SpatialIndex(rated.lon, rated.lat)
        markers = group_markers(rated.names, rated.lon, rated.lat)
        marker_index = index if len(markers) == len(rated.lon) else SpatialIndex(markers.lon, markers.lat)
    encode_lock = threading.Lock()

    def score_picture(picture: Image.Image) -> tuple[np.ndarray, dict]:
        """The unit vector of a decoded image, and its scores with their uncertainty as JSON fields (run by
        the decoder's threads)."""
        if state.encode is None:  # the routes answer 503 before they decode
            raise HTTPException(503, "this server has no image encoder")
        with encode_lock:
            raw = state.encode([picture])
        try:
            refuse_unusable(raw, lambda row: "the image's vector", "the encoder cannot score this image")
        except BadVectors as exc:
            raise HTTPException(422, str(exc)) from None
        vector = l2_normalise(raw)
        found = state.estimator.estimate(vector)
        categories = state.scorer.categories
        interval = None if found.level is None else {"level": found.level, "lo": scores_dict(found.lo[0], categories),
                                                     "hi": scores_dict(found.hi[0], categories)}
        return vector, {"scores": scores_dict(found.scores[0], categories),
                        "sd": scores_dict(found.sd[0], categories), "interval": interval,
                        "best_similarity": number(found.best_similarity[0]),
                        "dissimilarity": number(found.dissimilarity[0]),
                        "out_of_domain": bool(found.out_of_domain[0])}

    def similar_images(vector: np.ndarray) -> list[dict]:
        """The K survey images most similar to a unit vector, with the weight each had in its scores."""
        weights = vector_weights(state.scorer, vector)
        similar = []
        for item in state.scorer.similar(vector, state.scorer.k):
            name = state.names[item.vector] if state.names else None
            thumb = f"/api/thumbnail/{item.vector}" if name and state.images is not None else None
            similar.append({"vector": item.vector, "image": name, "thumbnail": thumb,
                            "similarity": round(item.similarity, 6),
                            "ratings": scores_dict(np.array(list(item.ratings.values())), list(item.ratings)),
                            "ratings_count": item.counts,
                            "weights": {c: round(weights[c].get(item.vector, 0.0), 6) for c in weights}})
        return similar

    def number(value: float | None) -> float | None:
        return None if value is None or np.isnan(value) else round(float(value), 6)

    def scores_dict(values: np.ndarray, categories: list[str]) -> dict[str, float | None]:
        return {c: number(v) for c, v in zip(categories, values)}

    def rated_uncertainty(rated: RatedPoints, i: int, column: int | None = None) -> dict[str, object]:
        """What a rated file records about point ``i``'s uncertainty (sd and interval of one category or all)."""
        extra: dict[str, object] = {}
        for name in ("sd", "lo", "hi"):
            values = getattr(rated, name)
            if values is not None:
                extra[name] = number(values[i, column]) if column is not None \
                    else scores_dict(values[i], rated.categories)
        if rated.lo is not None and rated.metadata.get("interval_level") is not None:
            extra["level"] = float(rated.metadata["interval_level"])  # recorded by percept rate (not in CSV files)
        for name in ("best_similarity", "dissimilarity"):
            if getattr(rated, name) is not None:
                extra[name] = number(getattr(rated, name)[i])
        for flag in ("out_of_domain", "in_survey"):
            if getattr(rated, flag) is not None:
                extra[flag] = bool(getattr(rated, flag)[i])
        return extra

    def check_category(category: Category | None) -> None:
        known = rated.categories if rated is not None else state.scorer.categories
        if category is not None and category.value not in known:
            raise HTTPException(400, f"this server has no {category.value} scores: use one of {', '.join(known)}")

    @app.exception_handler(PerceptError)
    async def percept_error(request: Request, exc: PerceptError):
        return JSONResponse({"detail": str(exc)}, status_code=error_status(exc))

    @app.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
    def page():
        return FileResponse(STATIC / "index.html")

    @app.api_route("/favicon.ico", methods=["GET", "HEAD"], include_in_schema=False)
    def favicon():
        return FileResponse(STATIC / "favicon.ico", media_type="image/x-icon")

    @app.get("/docs", include_in_schema=False)
    def swagger_ui():
        return swagger_ui_page(f"{app.title} API", app.openapi_url)

    @app.get("/redoc", include_in_schema=False)
    def redoc():
        return redoc_page(f"{app.title} API", app.openapi_url)

    @app.get("/api/health", responses=errors())
    def health() -> dict:
        """Liveness and what this server can do."""
        return {"status": "ok", "categories": state.scorer.categories, "k": state.scorer.k,
                "rated_points": 0 if rated is None else len(rated.lon),
                "encoder": state.encode is not None, "model": state.model_name,
                "mapillary": state.mapillary is not None}

    @app.get("/api/config", responses=errors())
    def config() -> dict:
        """Settings the page needs: categories, tiles, the rated area, the model and limits."""
        bounds = None
        if rated is not None and len(rated.lon):
            bounds = [float(rated.lon.min()), float(rated.lat.min()), float(rated.lon.max()), float(rated.lat.max())]
        return {"categories": rated.categories if rated is not None else state.scorer.categories,
                "tile_url": options.tile_url, "tile_attribution": options.tile_attribution, "bounds": bounds,
                "default_radius": options.default_radius_m, "max_radius": options.max_radius_m,
                "max_upload_bytes": options.max_upload_bytes, "mapillary": state.mapillary is not None,
                "model": state.model_name, "listed_points": options.listed_points}

    @app.post("/api/score", responses=errors(400, 403, 408, 413, 415, 422, 503), openapi_extra=UPLOAD_BODY)
    async def score(request: Request) -> dict:
        """Score an uploaded photo (form field ``image``): five scores with the weighted sd of their K neighbours'
        scores and their prediction ``interval`` (``level``, ``lo``, ``hi``; null when the model has no
        calibration or intervals are off), the photo's best similarity to the survey, its ``dissimilarity``
        (distance to the nearest survey image over the survey's mean nearest-neighbour distance),
        ``out_of_domain`` (below the survey's 5th-percentile nearest-neighbour similarity) and the K most
        similar survey images with the ``weights`` each had in the scores."""
        if state.encode is None:
            raise HTTPException(503, "this server has no image encoder: start it with a model it can encode for")
        try:
            upload = await read_upload(request, "image", options.max_upload_bytes, pace, gate)
        except UploadRefused as exc:
            raise refused(exc) from None
        except MissingField as exc:
            raise RequestValidationError([{"type": "missing", "loc": ["body", "image"], "msg": str(exc),
                                           "input": None}]) from None
        try:
            vector, estimate = await asyncio.wrap_future(
                decoder.decode(upload.open, "the upload", score_picture, upload.size))
        finally:
            upload.close()
        return {**estimate, "k": state.scorer.k, "similar": similar_images(vector[0])}

    def refused(exc: UploadRefused) -> HTTPException:
        """The answer to a refused upload; the connection closes (the rest of its body is not read)."""
        headers = {"Connection": "close"}
        if exc.status == 503:
            headers["Retry-After"] = str(RETRY_AFTER_S)
        return HTTPException(exc.status, str(exc), headers=headers)

    @app.get("/api/thumbnail/{vector}", response_class=Response, responses={
        200: {"content": {"image/jpeg": {}}, "description": "A small JPEG of the survey image"},
        **errors(404, 422)})
    def thumbnail(vector: int):
        """A small JPEG of the survey image behind a model vector (the ``thumbnail`` of /api/score's results)."""
        name = state.names[vector] if state.names and 0 <= vector < len(state.names) else None
        path = state.images.find(name) if name and state.images is not None else None
        if path is None:
            raise HTTPException(404, f"no survey image for model vector {vector}")
        try:
            body = decoder.decode(lambda: path, f"survey image {name}", thumbnail_jpeg).result()
        except ImageError as exc:
            raise HTTPException(404, f"cannot show survey image {name}: {exc}") from None
        return Response(body, media_type="image/jpeg")

    @app.get("/api/point", responses=errors(400, 422, 503))
    def point(lat: float = Query(..., ge=-90, le=90), lon: float = Query(..., ge=-180, le=180),
              radius: float = Query(options.default_radius_m, gt=0, le=options.max_radius_m),
              category: Category | None = None) -> dict:
        """Modelled scores at a point: inverse-distance weighted over rated images within ``radius`` metres; each
        listed image carries its ``weight``, its share of those weights."""
        check_category(category)
        found = index.within(lat, lon, radius) if index is not None else None
        count, scores, points, message, mapillary = 0, None, [], None, None
        if found is not None and rated is not None and len(found.index):
            count = int(len(found.index))
            scores = scores_dict(found.weighted(rated.scores), rated.categories)
            shares = distance_shares(found.weight)
            points = [{"image": str(rated.names[i]), "lat": float(rated.lat[i]), "lon": float(rated.lon[i]),
                       "distance_m": round(float(d), 2), "weight": round(float(w), 6),
                       "scores": scores_dict(rated.scores[i], rated.categories), **rated_uncertainty(rated, i)}
                      for i, d, w in zip(found.index[:options.listed_points], found.distance, shares)]
        else:
            message = f"no imagery within {radius:g} m"
            if state.mapillary is not None:
                mapillary = mapillary_near(state.mapillary, lat, lon, radius)
        answer: dict[str, object] = {"lat": lat, "lon": lon, "radius": radius, "count": count, "shown": len(points),
                                     "scores": scores, "points": points, "message": message, "mapillary": mapillary}
        if category is not None and scores is not None:
            answer["category"], answer["value"] = category.value, scores[category.value]
        return answer

    def mapillary_near(client: MapillaryClient, lat: float, lon: float, radius: float) -> dict[str, object]:
        try:
            found = client.nearest_image(lat, lon, radius)
            if found is None:
                return {"found": False, "message": f"no Mapillary image within {radius:g} m"}
            data = client.thumbnail(found)
        except MapillaryError as exc:
            return {"found": False, "message": str(exc)}
        if state.encode is None:
            raise HTTPException(503, "this server has no image encoder to score Mapillary images with")
        try:
            vector, estimate = decoder.decode(lambda: data, f"Mapillary image {found.id}", score_picture).result()
        except ImageError as exc:
            return {"found": False, "message": str(exc)}
        return {"found": True, "id": found.id, "thumb_url": found.thumb_url, "lat": found.lat, "lon": found.lon,
                "distance_m": round(found.distance_m, 2), **estimate, "k": state.scorer.k,
                "similar": similar_images(vector[0])}

    @app.get("/api/rated", responses=errors(400, 422))
    def rated_points(west: float = Query(-180, ge=-180, le=180), south: float = Query(-90, ge=-90, le=90),
                     east: float = Query(180, ge=-180, le=180), north: float = Query(90, ge=-90, le=90),
                     category: Category | None = None,
                     limit: int = Query(options.rated_limit, ge=1, le=options.max_rated_limit)) -> dict:
        """Rated places inside a box as GeoJSON, one marker per place (the crops of one panorama at one
        place share a marker, listed in ``crops``), thinned evenly to ``limit`` markers; ``total`` counts
        the markers in the box and ``shown`` those returned."""
        check_category(category)
        if west > east or south > north:
            raise HTTPException(400, "the box needs west <= east and south <= north")
        if rated is None or markers is None or marker_index is None:
            return {"type": "FeatureCollection", "features": [], "total": 0, "shown": 0, "category": None}
        column = rated.categories.index(category.value) if category else 0
        inside = marker_index.in_box(west, south, east, north, len(marker_index))
        features = [marker_feature(rated, markers, m, column) for m in thin_evenly(inside, limit)]
        return {"type": "FeatureCollection", "features": features, "category": rated.categories[column],
                "total": len(inside), "shown": len(features)}

    def marker_feature(rated: RatedPoints, markers: Markers, marker: int, column: int) -> dict[str, object]:
        """One marker: its rated image (or the crops of one panorama, and their mean) with what the rated
        file records about their uncertainty."""
        rows = markers.rows(marker)
        values = rated.scores[rows, column]
        crops = [{"image": str(rated.names[r]), "value": number(v), **rated_uncertainty(rated, r, column)}
                 for r, v in zip(rows, values)]
        properties = {"image": markers.keys[marker], "value": None if np.isnan(values).all() else
                      float(np.nanmean(values))}
        if len(rows) == 1:
            properties.update(rated_uncertainty(rated, rows[0], column))
        return {"type": "Feature",
                "geometry": {"type": "Point", "coordinates": [float(markers.lon[marker]), float(markers.lat[marker])]},
                "properties": {**properties, "crops": crops}}

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    if options.hosts is not None:
        app.add_middleware(HostCheck, policy=options.hosts)
    mapillary_url = state.mapillary.base_url if state.mapillary is not None else None
    app.add_middleware(SecurityHeaders, policy=page_policy(image_sources(options.tile_url, mapillary_url)))
    return app
