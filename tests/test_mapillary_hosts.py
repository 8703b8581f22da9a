"""``percept serve``'s Mapillary look-ups keep the token with the Graph API host: the search carries it, the
thumbnail download (from a second loopback server, another port) does not, and messages never show it."""

from __future__ import annotations

from itertools import chain

import httpx
import pytest
from http_standin import StandIn
from mapillary_standin import FakeImage, MapillaryStandIn, jpeg_for

from percept.city.mapillary import GraphApiAuth, MapillaryClient, MapillaryError, MapillaryImage, plain_http_refused

TOKEN = "MLY|serve|secret"
POINT = (52.3700, 4.8950)


@pytest.fixture
def hosts():
    images = [FakeImage(5000, POINT[1], POINT[0] + 0.0002, 0, 0.0, "s"),
              FakeImage(5001, POINT[1], POINT[0] + 0.0009, 0, 0.0, "s")]
    standin = MapillaryStandIn(images, TOKEN)
    with StandIn(standin) as api, StandIn(standin) as thumbs:
        standin.base_url, standin.thumb_base_url = api.url, thumbs.url
        yield api, thumbs


def test_search_has_the_token_and_the_thumbnail_host_never_sees_it(hosts):
    api, thumbs = hosts
    client = MapillaryClient(TOKEN, api.url)
    found = client.nearest_image(*POINT, radius_m=200)
    assert found.id == "5000" and found.thumb_url.startswith(thumbs.url)
    assert client.thumbnail(found) == jpeg_for(5000, "1024")
    assert [r.path for r in api.requests] == ["/images"]
    assert api.requests[0].headers["authorization"] == f"OAuth {TOKEN}" and "access_token" not in api.requests[0].query
    assert [r.path for r in thumbs.requests] == ["/thumb/5000/1024"]
    request = thumbs.requests[0]
    assert "authorization" not in request.headers
    assert not any("secret" in value for value in [*request.headers.values(), *chain(*request.query.values())])


def test_a_refused_token_is_reported_without_it(hosts):
    api, _ = hosts
    with pytest.raises(MapillaryError) as refused:
        MapillaryClient("MLY|wrong|guess", api.url).nearest_image(*POINT, radius_m=200)
    assert str(refused.value) == "Mapillary image search failed: HTTP 401"


def test_plain_http_thumbnails_are_refused_when_the_api_is_https(hosts):
    _, thumbs = hosts
    client = MapillaryClient(TOKEN, "https://graph.invalid")
    image = MapillaryImage("5000", f"{thumbs.url}/thumb/5000/1024?sig=1", POINT[1], POINT[0], 1.0)
    with pytest.raises(MapillaryError, match="refused a plain-http download while the Mapillary API is https"):
        client.thumbnail(image)
    assert thumbs.requests == []
    assert plain_http_refused("https://graph.mapillary.com", "http://cdn.example/x.jpg")
    assert not plain_http_refused("https://graph.mapillary.com", "https://cdn.example/x.jpg")
    assert not plain_http_refused("http://127.0.0.1:8080", "http://127.0.0.1:8081/x.jpg")


@pytest.mark.parametrize("url, sent", [
    ("https://graph.mapillary.com/images?bbox=1,2,3,4", True),
    ("https://graph.mapillary.com:443/123", True),
    ("http://graph.mapillary.com/123", False),  # another scheme
    ("https://graph.mapillary.com:8443/123", False),  # another port
    ("https://scontent.example.net/thumb.jpg", False),
    ("https://graph.mapillary.com.evil.example/123", False),
])
def test_the_authorization_header_goes_to_the_api_origin_only(url, sent):
    request = httpx.Request("GET", url)
    flow = GraphApiAuth(TOKEN, "https://graph.mapillary.com").auth_flow(request)
    assert ("authorization" in next(flow).headers) == sent
    assert TOKEN not in repr(GraphApiAuth(TOKEN, "https://graph.mapillary.com"))
