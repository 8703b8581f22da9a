"""The web app: the Image Demo (score a photo) and the Map Explorer (rated locations), with a JSON API."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from fastapi import FastAPI, HTTPException, Query, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from PIL import Image

from percept.city.mapillary import MapillaryClient, MapillaryError
from percept.city.rating import RatedPoints
from percept.city.spatial_index import SpatialIndex
from percept.data.vector_checks import BadVectors, refuse_unusable
from percept.errors import PerceptError
from percept.model.estimates import Estimator
from percept.model.knn import l2_normalise
from percept.model.scoring import MultiScorer
from percept.web.images import BadImage, ImageFolder, decode_image, thumbnail_jpeg

STATIC = Path(__file__).resolve().parent / "static"

Encode = Callable[[list[Image.Image]], np.ndarray]


@dataclass
class AppOptions:
    """Limits and page settings."""

    max_upload_bytes: int = 10 * 1024 * 1024
    max_pixels: int = 40_000_000
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


def create_app(state: AppState) -> FastAPI:
    """Build the FastAPI app for a scorer, an image encoder and (optionally) rated locations."""
    app = FastAPI(title="Percept KNN", description="Score street images in five perception categories.",
                  version="1")
    options = state.options
    index = SpatialIndex(state.rated.lon, state.rated.lat) if state.rated is not None else None
    encode_lock = threading.Lock()

    def score_image(image: Image.Image) -> tuple[np.ndarray, dict]:
        """The image's unit vector, and its scores with their uncertainty as JSON fields."""
        if state.encode is None:
            raise HTTPException(503, "this server has no image encoder")
        with encode_lock:
            raw = state.encode([image])
        try:
            refuse_unusable(raw, lambda row: "the image's vector", "the encoder cannot score this image")
        except BadVectors as exc:
            raise HTTPException(422, str(exc)) from None
        vector = l2_normalise(raw)
        found = state.estimator.estimate(vector)
        return vector, {"scores": scores_dict(found.scores[0], state.scorer.categories),
                        "sd": scores_dict(found.sd[0], state.scorer.categories),
                        "best_similarity": number(found.best_similarity[0]),
                        "out_of_domain": bool(found.out_of_domain[0])}

    def number(value) -> float | None:
        return None if value is None or np.isnan(value) else round(float(value), 6)

    def scores_dict(values: np.ndarray, categories: list[str]) -> dict[str, float | None]:
        return {c: number(v) for c, v in zip(categories, values)}

    def rated_uncertainty(i: int, column: int | None = None) -> dict:
        """What a rated file records about point ``i``'s uncertainty (sd of one category or all)."""
        rated, extra = state.rated, {}
        if rated.sd is not None:
            extra["sd"] = number(rated.sd[i, column]) if column is not None else scores_dict(rated.sd[i], rated.categories)
        if rated.best_similarity is not None:
            extra["best_similarity"] = number(rated.best_similarity[i])
        for flag in ("out_of_domain", "in_survey"):
            if getattr(rated, flag) is not None:
                extra[flag] = bool(getattr(rated, flag)[i])
        return extra

    def check_category(category: str | None) -> None:
        known = state.rated.categories if state.rated is not None else state.scorer.categories
        if category is not None and category not in known:
            raise HTTPException(400, f"unknown category {category!r}: use one of {', '.join(known)}")

    @app.exception_handler(PerceptError)
    async def percept_error(request: Request, exc: PerceptError):
        return JSONResponse({"detail": str(exc)}, status_code=400)

    @app.get("/", include_in_schema=False)
    def page():
        return FileResponse(STATIC / "index.html")

    @app.get("/api/health")
    def health() -> dict:
        """Liveness and what this server can do."""
        return {"status": "ok", "categories": state.scorer.categories, "k": state.scorer.k,
                "rated_points": 0 if state.rated is None else len(state.rated.lon),
                "encoder": state.encode is not None, "mapillary": state.mapillary is not None}

    @app.get("/api/config")
    def config() -> dict:
        """Settings the page needs: categories, tiles, the rated area and limits."""
        bounds = None
        if state.rated is not None and len(state.rated.lon):
            rated = state.rated
            bounds = [float(rated.lon.min()), float(rated.lat.min()), float(rated.lon.max()), float(rated.lat.max())]
        return {"categories": state.rated.categories if state.rated is not None else state.scorer.categories,
                "tile_url": options.tile_url, "tile_attribution": options.tile_attribution, "bounds": bounds,
                "default_radius": options.default_radius_m, "max_radius": options.max_radius_m,
                "max_upload_bytes": options.max_upload_bytes, "mapillary": state.mapillary is not None}

    @app.post("/api/score")
    def score(request: Request, image: UploadFile) -> dict:
        """Score an uploaded photo: five scores with the weighted sd of their K neighbours' scores, the photo's
        best similarity to the survey, ``out_of_domain`` (below the survey's 5th-percentile nearest-neighbour
        similarity) and the K most similar survey images."""
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > options.max_upload_bytes + 64 * 1024:
            raise HTTPException(413, f"uploads are limited to {options.max_upload_bytes} bytes")
        data = image.file.read(options.max_upload_bytes + 1)
        if len(data) > options.max_upload_bytes:
            raise HTTPException(413, f"uploads are limited to {options.max_upload_bytes} bytes")
        try:
            picture = decode_image(data, options.max_pixels)
        except BadImage as exc:
            raise HTTPException(exc.status, str(exc)) from None
        vector, estimate = score_image(picture)
        similar = []
        for item in state.scorer.similar(vector[0], state.scorer.k):
            name = state.names[item.vector] if state.names else None
            thumb = f"/api/thumbnail/{item.vector}" if name and state.images is not None else None
            similar.append({"vector": item.vector, "image": name, "thumbnail": thumb,
                            "similarity": round(item.similarity, 6),
                            "ratings": scores_dict(np.array(list(item.ratings.values())), list(item.ratings)),
                            "ratings_count": item.counts})
        return {**estimate, "k": state.scorer.k, "similar": similar}

    @app.get("/api/thumbnail/{vector}", include_in_schema=False)
    def thumbnail(vector: int):
        name = state.names[vector] if state.names and 0 <= vector < len(state.names) else None
        path = state.images.find(name) if name and state.images is not None else None
        if path is None:
            raise HTTPException(404, "no image for this survey sample")
        try:
            body = thumbnail_jpeg(path)
        except (OSError, ValueError, Image.DecompressionBombError):
            raise HTTPException(404, f"cannot read survey image {name}") from None
        return Response(body, media_type="image/jpeg")

    @app.get("/api/point")
    def point(lat: float = Query(..., ge=-90, le=90), lon: float = Query(..., ge=-180, le=180),
              radius: float = Query(options.default_radius_m, gt=0, le=options.max_radius_m),
              category: str | None = None) -> dict:
        """Modelled scores at a point: inverse-distance weighted over rated images within ``radius`` metres."""
        check_category(category)
        answer = {"lat": lat, "lon": lon, "radius": radius, "count": 0, "scores": None, "points": [],
                  "message": None, "mapillary": None}
        found = index.within(lat, lon, radius) if index is not None else None
        if found is not None and len(found.index):
            rated = state.rated
            answer["count"] = int(len(found.index))
            answer["scores"] = scores_dict(found.weighted(rated.scores), rated.categories)
            answer["points"] = [{"image": str(rated.names[i]), "lat": float(rated.lat[i]), "lon": float(rated.lon[i]),
                                 "distance_m": round(float(d), 2), "scores": scores_dict(rated.scores[i], rated.categories),
                                 **rated_uncertainty(i)}
                                for i, d in zip(found.index[:options.listed_points], found.distance)]
        else:
            answer["message"] = f"no imagery within {radius:g} m"
            if state.mapillary is not None:
                answer["mapillary"] = mapillary_near(lat, lon, radius)
        if category is not None and answer["scores"] is not None:
            answer["category"], answer["value"] = category, answer["scores"][category]
        return answer

    def mapillary_near(lat: float, lon: float, radius: float) -> dict:
        try:
            found = state.mapillary.nearest_image(lat, lon, radius)
            if found is None:
                return {"found": False, "message": f"no Mapillary image within {radius:g} m"}
            picture = decode_image(state.mapillary.thumbnail(found), options.max_pixels)
        except (MapillaryError, BadImage) as exc:
            return {"found": False, "message": str(exc)}
        _, estimate = score_image(picture)
        return {"found": True, "id": found.id, "thumb_url": found.thumb_url, "lat": found.lat, "lon": found.lon,
                "distance_m": round(found.distance_m, 2), **estimate}

    @app.get("/api/rated")
    def rated_points(west: float = Query(-180, ge=-180, le=180), south: float = Query(-90, ge=-90, le=90),
                     east: float = Query(180, ge=-180, le=180), north: float = Query(90, ge=-90, le=90),
                     category: str | None = None,
                     limit: int = Query(options.rated_limit, ge=1, le=options.max_rated_limit)) -> dict:
        """Rated locations inside a box as GeoJSON (thinned evenly to ``limit`` points)."""
        check_category(category)
        if west > east or south > north:
            raise HTTPException(400, "the box needs west <= east and south <= north")
        if index is None:
            return {"type": "FeatureCollection", "features": [], "total": 0}
        rated = state.rated
        column = rated.categories.index(category) if category else 0
        chosen = index.in_box(west, south, east, north, limit)
        features = [{"type": "Feature", "geometry": {"type": "Point", "coordinates": [float(rated.lon[i]), float(rated.lat[i])]},
                     "properties": {"image": str(rated.names[i]),
                                    "value": None if np.isnan(rated.scores[i, column]) else float(rated.scores[i, column]),
                                    **rated_uncertainty(i, column)}}
                    for i in chosen]
        return {"type": "FeatureCollection", "features": features, "category": rated.categories[column]}

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app
