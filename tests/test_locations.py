

def test_location_keys_are_each_names_location_key():
    """The batch form gives location_key of every name, whether the names are plain file names (kept at once) or
    not."""
    from percept.data.locations import location_key, location_keys
    plain = [f"img_{i}.jpg" for i in range(50)]
    assert location_keys(plain) == plain
    mixed = [*plain, "a/b/c.jpg", "x\\y.png", ".", "", "d/", "./e.jpg"]
    assert location_keys(mixed) == [location_key(n) for n in mixed]
    assert location_keys(["."]) == [location_key(".")] and location_keys([""]) == [location_key("")]
    assert location_keys([]) == []
