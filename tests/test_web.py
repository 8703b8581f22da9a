"""The web API: scores, the map look-up, every refused request (4xx, never 500), and Mapillary."""

from __future__ import annotations

import io
import json
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from web_fixtures import CENTRE, build_state, png_bytes

from percept.categories import CATEGORIES
from percept.city.mapillary import MapillaryClient, resolve_token
from percept.web.app import Category, create_app

FAR = (52.40, 4.80)  # ~8 km from the rated points


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    return TestClient(create_app(build_state(tmp_path_factory.mktemp("web"))), raise_server_exceptions=False)


def test_health_config_page_and_docs(client):
    health = client.get("/api/health").json()
    assert health["status"] == "ok" and health["categories"] == list(CATEGORIES) and health["rated_points"] == 60
    assert client.get("/api/config").json()["bounds"] is not None
    assert "Map Explorer" in client.get("/").text
    assert "/api/score" in client.get("/openapi.json").json()["paths"]
    assert client.get("/docs").status_code == 200
    assert client.get("/static/vendor/leaflet/leaflet.js").status_code == 200


def test_score_upload(client):
    response = client.post("/api/score", files={"image": ("street.png", png_bytes(), "image/png")})
    assert response.status_code == 200
    body = response.json()
    assert list(body["scores"]) == list(CATEGORIES)
    assert all(1 <= v <= 5 for v in body["scores"].values())
    assert len(body["similar"]) == body["k"] == 5
    first = body["similar"][0]
    assert first["image"].startswith("survey_") and set(first["ratings"]) == set(CATEGORIES)
    thumb = client.get(first["thumbnail"])
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"


def truncated_png() -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (200, 200, 3), dtype=np.uint8)).save(out, "PNG")
    return out.getvalue()[:3000]


def bomb_png(width=30000, height=30000) -> bytes:
    """A few hundred bytes declaring a huge 1-bit image."""
    import struct

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    rows = zlib.compress(b"\x00" * ((width // 8 + 1) * 200))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


@pytest.mark.parametrize("data,status", [
    (b"x" * 250_000, 413),
    (b"this is not an image", 415),
    (b"", 400),
    (truncated_png(), 400),
    (bomb_png(), 413),
    (bomb_png(3000, 3000), 413),
])
def test_bad_uploads_get_4xx_json(client, data, status):
    response = client.post("/api/score", files={"image": ("x.png", data, "image/png")})
    assert response.status_code == status, response.text
    assert "detail" in response.json()


def test_missing_upload_field(client):
    assert client.post("/api/score").status_code == 422


def test_point_within_imagery(client):
    body = client.get("/api/point", params={"lat": CENTRE[0], "lon": CENTRE[1], "radius": 300}).json()
    assert body["count"] > 0 and list(body["scores"]) == list(CATEGORIES)
    distances = [p["distance_m"] for p in body["points"]]
    assert distances == sorted(distances) and distances[-1] <= 300
    single = client.get("/api/point", params={"lat": CENTRE[0], "lon": CENTRE[1], "radius": 300,
                                              "category": "greenness"}).json()
    assert single["value"] == body["scores"]["greenness"]


def test_point_without_imagery(client):
    body = client.get("/api/point", params={"lat": FAR[0], "lon": FAR[1], "radius": 50}).json()
    assert body["count"] == 0 and body["scores"] is None
    assert body["message"] == "no imagery within 50 m" and body["mapillary"] is None


@pytest.mark.parametrize("params,status", [
    ({"lat": 91, "lon": 4.9}, 422),
    ({"lat": 52, "lon": -181}, 422),
    ({"lat": "north", "lon": 4.9}, 422),
    ({"lat": 52, "lon": 4.9, "radius": 0}, 422),
    ({"lat": 52, "lon": 4.9, "radius": 50_000}, 422),
    ({"lat": 52, "lon": 4.9, "category": "beauty"}, 422),
    ({"lon": 4.9}, 422),
])
def test_bad_point_requests(client, params, status):
    response = client.get("/api/point", params=params)
    assert response.status_code == status and "detail" in response.json()


def test_rated_layer_is_bounded(client):
    box = {"west": 4.85, "south": 52.3, "east": 4.95, "north": 52.4}
    data = client.get("/api/rated", params={**box, "category": "safety"}).json()
    assert data["type"] == "FeatureCollection" and len(data["features"]) == 60
    assert len(client.get("/api/rated", params={**box, "limit": 7}).json()["features"]) == 7
    assert client.get("/api/rated", params={**box, "limit": 10**6}).status_code == 422
    assert client.get("/api/rated", params={**box, "category": "beauty"}).status_code == 422
    assert client.get("/api/rated", params={"west": 5, "east": 4}).status_code == 400


class StandIn(BaseHTTPRequestHandler):
    """Answers like Mapillary's Graph API v4: /images search and a thumbnail."""

    requests: list = []

    def do_GET(self):
        StandIn.requests.append((self.path, self.headers.get("Authorization")))
        if self.path.startswith("/images"):
            host = f"http://127.0.0.1:{self.server.server_address[1]}"
            body = json.dumps({"data": [
                {"id": "1001", "thumb_1024_url": f"{host}/thumb/1001.jpg",
                 "computed_geometry": {"type": "Point", "coordinates": [FAR[1] + 0.0003, FAR[0]]}},
                {"id": "1002", "thumb_1024_url": f"{host}/thumb/1002.jpg",
                 "computed_geometry": {"type": "Point", "coordinates": [FAR[1] + 0.0001, FAR[0]]}},
            ]}).encode()
            self._send(body, "application/json")
        elif self.path.startswith("/thumb/"):
            out = io.BytesIO()
            Image.new("RGB", (64, 48), (30, 140, 60)).save(out, "JPEG")
            self._send(out.getvalue(), "image/jpeg")
        else:
            self.send_error(404)

    def _send(self, body, kind):
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def graph_api():
    server = ThreadingHTTPServer(("127.0.0.1", 0), StandIn)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    StandIn.requests.clear()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_mapillary_fills_a_click_without_imagery(tmp_path, graph_api):
    state = build_state(tmp_path, mapillary=MapillaryClient("MLY|test", graph_api), images=False)
    client = TestClient(create_app(state), raise_server_exceptions=False)
    body = client.get("/api/point", params={"lat": FAR[0], "lon": FAR[1], "radius": 100}).json()
    found = body["mapillary"]
    assert found["found"] and found["id"] == "1002" and found["distance_m"] < 10
    assert list(found["scores"]) == list(CATEGORIES)
    search, auth = StandIn.requests[0]
    assert auth == "OAuth MLY|test"
    assert "fields=id%2Cthumb_1024_url%2Ccomputed_geometry" in search and "bbox=" in search
    near = client.get("/api/point", params={"lat": CENTRE[0], "lon": CENTRE[1], "radius": 300}).json()
    assert near["mapillary"] is None and len(StandIn.requests) == 2
    assert client.get("/api/health").json()["mapillary"] is True


def test_mapillary_outside_radius_and_unreachable(tmp_path, graph_api):
    state = build_state(tmp_path, mapillary=MapillaryClient("t", graph_api), images=False)
    client = TestClient(create_app(state))
    body = client.get("/api/point", params={"lat": FAR[0], "lon": FAR[1], "radius": 1}).json()
    assert body["mapillary"]["found"] is False
    state.mapillary = MapillaryClient("t", "http://127.0.0.1:9", timeout=2)
    unreachable = client.get("/api/point", params={"lat": FAR[0], "lon": FAR[1], "radius": 50})
    assert unreachable.status_code == 200 and "failed" in unreachable.json()["mapillary"]["message"]


def test_no_token_means_no_mapillary(monkeypatch):
    monkeypatch.delenv("MAPILLARY_TOKEN", raising=False)
    assert resolve_token(None) is None and resolve_token("") is None
    monkeypatch.setenv("MAPILLARY_TOKEN", "MLY|env")
    assert resolve_token(None) == "MLY|env" and resolve_token("MLY|flag") == "MLY|flag"


def test_openapi_lists_every_status_and_the_category_names(client):
    schema = client.get("/openapi.json").json()
    paths = schema["paths"]
    documented = {path: {int(status) for status in operation["responses"]}
                  for path, item in paths.items() for operation in item.values()}
    assert documented["/api/score"] == {200, 400, 403, 408, 413, 415, 421, 422, 503}
    assert documented["/api/point"] == {200, 400, 421, 422, 503}
    assert documented["/api/rated"] == {200, 400, 421, 422}
    assert documented["/api/thumbnail/{vector}"] == {200, 404, 421, 422}
    assert documented["/api/health"] == documented["/api/config"] == {200, 421}
    assert schema["components"]["schemas"]["Category"]["enum"] == list(CATEGORIES)
    upload = paths["/api/score"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert upload["required"] == ["image"]


def test_docs_load_their_assets_from_the_app(client):
    for page, assets in (("/docs", ["/static/vendor/swagger-ui/swagger-ui-bundle.js",
                                     "/static/vendor/swagger-ui/swagger-ui.css"]),
                         ("/redoc", ["/static/vendor/redoc/redoc.standalone.js"])):
        answer = client.get(page)
        html = answer.text
        assert "http://" not in html and "https://" not in html and "//cdn" not in html
        assert "default-src 'self'" in answer.headers["content-security-policy"]
        for asset in assets:
            assert f'"{asset}"' in html
            assert client.get(asset).status_code == 200


def multipart(body: bytes, boundary: str = "b") -> dict:
    return {"content": body, "headers": {"Content-Type": f"multipart/form-data; boundary={boundary}"}}


def form(name: str, data: bytes, boundary: str = "b") -> bytes:
    return (f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="x.png"\r\n'
            f"Content-Type: image/png\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()


@pytest.mark.parametrize("request_kwargs,status,words", [
    ({"content": png_bytes(), "headers": {"Content-Type": "image/png"}}, 415, "multipart/form-data"),
    ({"content": b"{}", "headers": {"Content-Type": "application/json"}}, 415, "multipart/form-data"),
    ({"content": b"--b\r\n", "headers": {"Content-Type": "multipart/form-data"}}, 400, "no boundary"),
    (multipart(b"this is not multipart at all"), 400, "multipart"),
    (multipart(form("image", png_bytes())[:-12]), 400, "cut short"),
    (multipart(form("photo", png_bytes())), 422, "no file field named 'image'"),
    (multipart(form("image", b"")), 400, "empty"),
    (multipart(form("image", b"\0" * 200_001)), 413, "limit of 200000 bytes"),
    ({"content": b"", "headers": {}}, 422, "no body"),
])
def test_malformed_uploads_get_4xx(client, request_kwargs, status, words):
    response = client.post("/api/score", **request_kwargs)
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert words in (detail if isinstance(detail, str) else detail[0]["msg"])


def test_declared_length_over_the_cap_is_refused(client):
    response = client.post("/api/score", content=b"x", headers={"Content-Length": str(10**10),
                                                                 "Content-Type": "multipart/form-data; boundary=b"})
    assert response.status_code == 413


def test_upload_within_the_form_and_other_fields(client):
    body = (b'--b\r\nContent-Disposition: form-data; name="note"\r\n\r\nhello\r\n' + form("image", png_bytes()))
    response = client.post("/api/score", **multipart(body))
    assert response.status_code == 200 and len(response.json()["scores"]) == 5


def test_no_encoder_is_503(tmp_path):
    state = build_state(tmp_path)
    state.encode = None
    response = TestClient(create_app(state)).post("/api/score", files={"image": ("a.png", png_bytes(), "image/png")})
    assert response.status_code == 503 and "no image encoder" in response.json()["detail"]


def test_crops_of_one_panorama_share_a_marker(tmp_path):
    from web_fixtures import PANORAMA

    client = TestClient(create_app(build_state(tmp_path, crops=4)))
    data = client.get("/api/rated", params={"category": "greenness"}).json()
    assert data["total"] == data["shown"] == len(data["features"]) == 61
    pano = [f for f in data["features"] if len(f["properties"]["crops"]) > 1]
    assert len(pano) == 1
    props = pano[0]["properties"]
    assert props["image"] == "pano_1" and [c["image"] for c in props["crops"]] == [f"pano_1_x{i}.jpg" for i in range(4)]
    assert [c["value"] for c in props["crops"]] == [1.0, 2.0, 3.0, 4.0] and props["value"] == 2.5
    assert pano[0]["geometry"]["coordinates"] == [PANORAMA[1], PANORAMA[0]]
    thinned = client.get("/api/rated", params={"limit": 25}).json()
    assert (thinned["total"], thinned["shown"], len(thinned["features"])) == (61, 25, 25)


def test_point_says_how_many_it_lists(client):
    body = client.get("/api/point", params={"lat": CENTRE[0], "lon": CENTRE[1], "radius": 1000}).json()
    assert body["count"] == 60 and body["shown"] == len(body["points"]) == 25


def test_config_names_the_model(client):
    assert client.get("/api/config").json()["model"] == "percept:tiny"
    assert client.get("/api/health").json()["model"] == "percept:tiny"


@pytest.mark.parametrize("bound,allowed,header,answered", [
    ("127.0.0.1", (), "127.0.0.1:8000", True),
    ("127.0.0.1", (), "localhost", True),
    ("127.0.0.1", (), "[::1]:8000", True),
    ("127.0.0.1", (), "evil.example", False),
    ("127.0.0.1", (), "127.0.0.1.evil.example", False),
    ("127.0.0.1", ("Percept.Example",), "percept.example:443", True),
    ("0.0.0.0", (), "192.168.1.20:8000", True),
    ("0.0.0.0", (), "[2001:db8::1]:8000", True),
    ("0.0.0.0", (), "myhost.lan", False),
    ("0.0.0.0", ("myhost.lan",), "myhost.lan.", True),
    ("192.168.1.20", (), "192.168.1.21", False),
    ("192.168.1.20", (), "localhost", False),
    ("127.0.0.1", ("*",), "anything.example", True),
    ("127.0.0.1", (), None, True),
])
def test_host_policy(bound, allowed, header, answered):
    from percept.web.hosts import HostPolicy

    assert HostPolicy.for_binding(bound, allowed).allows(header) is answered


def test_host_check_in_the_app(tmp_path):
    from percept.web.app import AppOptions
    from percept.web.hosts import HostPolicy

    app = create_app(build_state(tmp_path, options=AppOptions(hosts=HostPolicy.for_binding("127.0.0.1"))))
    assert TestClient(app, base_url="http://127.0.0.1:8000").get("/api/health").status_code == 200
    refused = TestClient(app, base_url="http://rebound.example:8000").get("/api/health")
    assert refused.status_code == 421 and "--allow-host rebound.example" in refused.json()["detail"]


def test_markers_group_only_crops_of_one_panorama_at_one_place():
    from percept.web.markers import group_markers

    names = ["a_x0.jpg", "a_x1.jpg", "b.jpg", "a_x2.jpg", "a_x3.jpg", "sub\\a_x4.jpg", "b.jpg", "x/_x1.jpg"]
    lon = np.array([1, 1, 2, 1, 9, 1, 2, 3], dtype=float)
    lat = np.array([5, 5, 6, 5, 9, 5, 6, 3], dtype=float)
    markers = group_markers(names, lon, lat)
    assert list(markers.keys) == ["a", "b.jpg", "a_x3.jpg", "b.jpg", "x/_x1.jpg"]
    assert [markers.rows(m).tolist() for m in range(len(markers))] == [[0, 1, 3, 5], [2], [4], [6], [7]]
    assert markers.lon.tolist() == [1, 2, 9, 2, 3]
    assert len(group_markers([], np.array([]), np.array([]))) == 0


@pytest.mark.parametrize("path,method", [("/", "GET"), ("/api/health", "GET"), ("/static/app.js", "GET"),
                                         ("/api/nothing-here", "GET"), ("/api/score", "POST")])
def test_security_headers_on_every_response(client, path, method):
    answer = client.request(method, path)
    policy = answer.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy
    script = next(part for part in policy.split(";") if part.strip().startswith("script-src"))
    assert "unsafe-inline" not in script and "unsafe-eval" not in script
    assert answer.headers["x-frame-options"] == "DENY"
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert answer.headers["referrer-policy"] in ("no-referrer", "same-origin")


def test_docs_pages_run_no_inline_script(client):
    for page in ("/docs", "/redoc"):
        answer = client.get(page)
        script = next(p for p in answer.headers["content-security-policy"].split(";") if "script-src" in p)
        assert "unsafe-inline" not in script and "frame-ancestors 'none'" in answer.headers["content-security-policy"]
        assert "<script>" not in answer.text.replace(" ", "")
    assert "SwaggerUIBundle(" in client.get("/static/docs/swagger-init.js").text


def test_the_page_policy_allows_the_tile_and_mapillary_hosts(tmp_path):
    from percept.web.app import AppOptions

    options = AppOptions(tile_url="https://{s}.tile.example.org/{z}/{x}/{y}.png")
    state = build_state(tmp_path, mapillary=MapillaryClient("MLY|secret", "http://127.0.0.1:9"), options=options)
    policy = TestClient(create_app(state)).get("/").headers["content-security-policy"]
    images = next(part for part in policy.split(";") if part.strip().startswith("img-src")).split()
    assert images[1:4] == ["'self'", "data:", "blob:"]
    assert "https://*.tile.example.org" in images and "https://*.fbcdn.net" in images and "http://127.0.0.1:9" in images
    assert "secret" not in policy


@pytest.mark.parametrize("origin,status", [
    (None, 200),
    ("http://testserver", 200),
    ("http://evil.example", 403),
    ("http://testserver.evil.example", 403),
    ("http://testserver:8080", 403),
    ("null", 403),
])
def test_uploads_only_from_the_page_itself(client, origin, status):
    headers = {"Origin": origin} if origin else {}
    answer = client.post("/api/score", files={"image": ("street.png", png_bytes(), "image/png")}, headers=headers)
    assert answer.status_code == status, answer.text
    if status == 403:
        assert "only from its own page" in answer.json()["detail"]
        assert answer.headers["x-frame-options"] == "DENY"
    else:
        assert len(answer.json()["scores"]) == 5


@pytest.mark.parametrize("url,source", [
    ("https://{s}.tile.openstreetmap.org/{z}/{x}/{y}.png", "https://*.tile.openstreetmap.org"),
    ("https://tile.openstreetmap.org/{z}/{x}/{y}.png", "https://tile.openstreetmap.org"),
    ("http://user@Tiles.Example:8080/{z}/{x}/{y}", "http://tiles.example:8080"),
    ("https://a.{s}.example/{z}", "https:"),
    ("/tiles/{z}/{x}/{y}.png", None),
])
def test_tile_hosts_as_policy_sources(url, source):
    from percept.web.security import source_of

    assert source_of(url) == source


@pytest.mark.parametrize("origin,host,scheme,same", [
    ("http://127.0.0.1:8000", "127.0.0.1:8000", "http", True),
    ("http://[::1]:8000", "[::1]:8000", "http", True),
    ("https://percept.example", "percept.example", "http", True),  # behind a TLS proxy
    ("http://percept.example:80", "percept.example", "http", True),
    ("http://localhost:8000", "127.0.0.1:8000", "http", False),
    ("http://127.0.0.1:8001", "127.0.0.1:8000", "http", False),
    ("file://", "127.0.0.1:8000", "http", False),
])
def test_same_origin(origin, host, scheme, same):
    from percept.web.security import same_origin

    assert same_origin(origin, host, scheme) is same


def test_the_routes_take_exactly_the_survey_categories():
    assert [category.value for category in Category] == list(CATEGORIES)
