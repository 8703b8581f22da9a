"""The five perception categories rated in a Percept survey."""

CATEGORIES: tuple[str, ...] = ("walkability", "bikeability", "pleasantness", "greenness", "safety")

#: category_id used by the survey app's ratings table (1-based, in the order above).
CATEGORY_IDS: dict[str, int] = {name: i for i, name in enumerate(CATEGORIES, start=1)}
CATEGORY_BY_ID: dict[int, str] = {i: name for name, i in CATEGORY_IDS.items()}
