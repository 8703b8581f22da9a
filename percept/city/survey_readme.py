"""The ``README.txt`` written beside an exported survey: what the files hold and how they were made."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass

from percept.categories import CATEGORIES
from percept.city.survey_privacy import ADULT_AGE_BANDS, KEY_ENV, PSEUDONYM_HEX_DIGITS, Privacy
from percept.data.filters import age_band_label

README_NAME = "README.txt"
WIDTH = 78

_COLUMN_MEANINGS = {
    "rating_id": "the rating's id in the survey database",
    "ts": "when the rating was given (date, time and UTC offset, in the database session's time zone)",
    "rater": "the participant's pseudonym (see Pseudonyms); all ratings of one participant share it",
    "image_id": "the rated image's id, as in data.geojson",
    "category_id": "1 walkability, 2 bikeability, 3 pleasantness, 4 greenness, 5 safety",
    "rating": "the rating, a whole number from 1 to 5",
    "postalcode": "the postcode the participant gave",
    "country": "the country the participant gave",
    "age": "the participant's age in years",
    "monthly_gross_income": "the income band the participant chose",
    "education": "the participant's education (Primary, Secondary, Tertiary, Postgraduate)",
    "gender": "the participant's gender as given",
    "region": "NL or non-NL, decided on the full postcode and country before coarsening "
              "(what --region filters on)",
}


@dataclass(frozen=True)
class ReadmeFacts:
    """What the README reports about one export."""

    written_at: str
    source: str
    filters: str
    privacy: Privacy
    ratings: int
    participants: int
    features: int
    left_out_ratings: int
    left_out_participants: int


def readme_text(facts: ReadmeFacts) -> str:
    """The README's text; it names how pseudonyms were made but never the key."""
    coarsening = facts.privacy.coarsening
    columns = dict(_COLUMN_MEANINGS)
    if coarsening is not None:
        bands = ", ".join(age_band_label(low, high) for low, high in ADULT_AGE_BANDS)
        columns["age"] = f"the participant's age band: {bands} (0-17 for raters under 18)"
        columns["postalcode"] = (f"the first {coarsening.postcode_chars} character(s) of the postcode the "
                                 "participant gave" if coarsening.postcode_chars else "left empty")
    sections = [
        ("Percept survey export",
         [(f"Written {facts.written_at} from the survey database {facts.source}: {facts.ratings} ratings by "
           f"{facts.participants} participants, {facts.features} images in data.geojson.")]),
        ("Personal data",
         [("These files hold personal data: the ratings of survey participants with their answers about "
           "themselves. Keep them only as long as the study needs them, share them only with people entitled "
           "to see them, and within what the participants consented to.")]),
        ("Files",
         [("data.geojson: one Point (longitude, latitude, EPSG:4326) per rated image, with image_id, url, "
           "average_<category> (the mean of the exported ratings, null where none) and count_<category> "
           f"(their number), for the categories {', '.join(CATEGORIES)}."),
          ("demographics.csv: one row per exported rating, by rating_id, with a header row; written readable "
           "by its owner only."),
          "README.txt: this description."]),
        ("Columns of demographics.csv",
         [f"{name}: {columns[name]}" for name in facts.privacy.columns]),
        ("Filters", [f"Ratings with a value, of {facts.filters}."]),
        ("Consent",
         [("Only ratings of participants whose survey answer has consent = true are exported, in both files; "
           "consent false or not given counts as no consent. "
           f"Left out for lack of consent: {facts.left_out_ratings} ratings by {facts.left_out_participants} "
           "participants.")]),
        ("Coarsening",
         [f"Coarsened: {coarsening.describe()}; region added." if coarsening is not None else
          "Not coarsened: exact ages, full postcodes and income as the participants gave them."]),
        ("Pseudonyms", [_pseudonym_text(facts.privacy)]),
    ]
    lines = []
    for title, paragraphs in sections:
        lines += [title, "-" * len(title)]
        for paragraph in paragraphs:
            lines += textwrap.wrap(paragraph, WIDTH, subsequent_indent="  " if ": " in paragraph[:30] else "")
        lines.append("")
    return "\n".join(lines)


def _pseudonym_text(privacy: Privacy) -> str:
    method = (f"rater is the first {PSEUDONYM_HEX_DIGITS} hex digits of HMAC-SHA256(key, \"person:<id>\"), "
              "where <id> is the participant's id in the survey database, which the files do not contain.")
    if privacy.pseudonyms.from_random_key:
        return (f"The {method} The key was drawn at random for this export and not kept, so these pseudonyms "
                "match those of no other export.")
    return (f"The {method} The key came from --pseudonym-key or {KEY_ENV} and is not written here; exports "
            "with the same key give every participant the same pseudonym.")
