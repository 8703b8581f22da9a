"""The five perception categories rated in a Percept survey."""

CATEGORIES: tuple[str, ...] = ("walkability", "bikeability", "pleasantness", "greenness", "safety")

#: Ratings, and so their averages, lie on this scale.
SCORE_RANGE = (1.0, 5.0)

#: category_id used by the survey app's ratings table (1-based, in the order above).
CATEGORY_IDS: dict[str, int] = {name: i for i, name in enumerate(CATEGORIES, start=1)}
CATEGORY_BY_ID: dict[int, str] = {i: name for name, i in CATEGORY_IDS.items()}
