"""setuptools' build backend, with the web page's assets vendored into the package first (``web_assets``).

Every hook that reads the project's metadata (even the ones asking for build requirements, which run
``egg_info``) vendors first, since the metadata's license files include the assets' own licenses.
"""

from __future__ import annotations

import functools

import web_assets
from setuptools import build_meta


def _vendored(hook):
    @functools.wraps(hook)
    def run(*args, **kwargs):
        try:
            web_assets.vendor()
        except web_assets.AssetError as exc:
            raise SystemExit(f"error: {exc}") from None
        return hook(*args, **kwargs)

    return run


get_requires_for_build_wheel = _vendored(build_meta.get_requires_for_build_wheel)
get_requires_for_build_sdist = _vendored(build_meta.get_requires_for_build_sdist)
get_requires_for_build_editable = _vendored(build_meta.get_requires_for_build_editable)
prepare_metadata_for_build_wheel = _vendored(build_meta.prepare_metadata_for_build_wheel)
prepare_metadata_for_build_editable = _vendored(build_meta.prepare_metadata_for_build_editable)
build_wheel = _vendored(build_meta.build_wheel)
build_sdist = _vendored(build_meta.build_sdist)
build_editable = _vendored(build_meta.build_editable)
