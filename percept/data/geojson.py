"""Read the features of a GeoJSON FeatureCollection file, with one clear error for each way it can fail."""

from __future__ import annotations

from pathlib import Path

import orjson

from percept.errors import PerceptError


def read_collection(path: str | Path, what: str, missing_fix: str, shape_fix: str) -> dict:
    """The FeatureCollection in ``path``, checked to hold a ``features`` list.

    ``what`` names the file in messages ("survey GeoJSON"); ``missing_fix`` and ``shape_fix`` say
    what to do when the file is absent, or is JSON but not a FeatureCollection.
    """
    path = Path(path)
    try:
        data = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        raise PerceptError(f"{what} {path} does not exist: {missing_fix}") from None
    except OSError as exc:
        raise PerceptError(f"cannot read {what} {path}: {exc}") from None
    except orjson.JSONDecodeError as exc:
        raise PerceptError(f"{what} {path} is not valid JSON ({exc})") from None
    features = data.get("features") if isinstance(data, dict) else None
    if not isinstance(features, list):
        raise PerceptError(f"{what} {path} is not a GeoJSON FeatureCollection with a 'features' list: {shape_fix}")
    return data
