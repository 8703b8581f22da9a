-- The Percept survey app's schema (PostgreSQL + PostGIS), restated for the tests from the
-- published facts: tables, columns and types, the rrating view, and the seeded categories.
CREATE EXTENSION IF NOT EXISTS postgis;

CREATE TABLE language (
    langabbr varchar(2) PRIMARY KEY,
    fullname text
);

CREATE TABLE string (
    string_id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    k text
);

CREATE TABLE translation (
    string_id int REFERENCES string (string_id),
    langabbr varchar(2) REFERENCES language (langabbr),
    v text
);

CREATE TABLE useragent (
    useragent_id uuid PRIMARY KEY,
    useragent_str text
);

CREATE TABLE survey (
    survey_id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    age smallint,
    monthly_gross_income text,
    education text,
    gender text,
    postalcode text,
    country text,
    consent boolean
);

CREATE TABLE person (
    person_id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    survey_id int REFERENCES survey (survey_id)
);

CREATE TABLE session (
    session_id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    person_id int REFERENCES person (person_id),
    session_start timestamptz DEFAULT now(),
    session_active timestamptz DEFAULT now()
);

CREATE TABLE cookie (
    cookie_hash bytea,
    person_id int REFERENCES person (person_id),
    cookie_creation timestamptz,
    expiration timestamptz,
    ipaddr inet,
    useragent_id uuid REFERENCES useragent (useragent_id)
);

CREATE TABLE image (
    image_id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    system_path text UNIQUE,
    url text UNIQUE,
    cityname text,
    enabled boolean DEFAULT false
);

CREATE TABLE category (
    category_id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    shortname_sid int REFERENCES string (string_id),
    description_sid int REFERENCES string (string_id)
);

CREATE TABLE rating (
    rating_id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    ts timestamptz DEFAULT now(),
    session_id int REFERENCES session (session_id),
    image_id int REFERENCES image (image_id),
    category_id int REFERENCES category (category_id),
    rating smallint,
    ipaddr inet,
    useragent_id uuid REFERENCES useragent (useragent_id)
);

CREATE TABLE undoable (
    session_id int UNIQUE REFERENCES session (session_id),
    rating_id int REFERENCES rating (rating_id)
);

CREATE TABLE image_geo (
    image_id int UNIQUE REFERENCES image (image_id),
    angle_deg float,
    geo geometry(POINT, 4326),
    geo97415 geometry(POINT, 97415)
);

CREATE VIEW rrating AS
SELECT r.rating_id, r.ts, r.session_id, r.image_id, r.category_id, r.rating,
       sv.postalcode, sv.country, sv.age, sv.monthly_gross_income, sv.education, sv.gender
FROM rating r
JOIN session se ON se.session_id = r.session_id
JOIN person p ON p.person_id = se.person_id
JOIN survey sv ON sv.survey_id = p.survey_id
WHERE sv.age >= 18;

-- Seeds: English, and the five categories in the model's order (ids 1-5).
INSERT INTO language (langabbr, fullname) VALUES ('en', 'English');
INSERT INTO string (k) VALUES
    ('walkability'), ('walkability_description'),
    ('bikeability'), ('bikeability_description'),
    ('pleasantness'), ('pleasantness_description'),
    ('greenness'), ('greenness_description'),
    ('safety'), ('safety_description');
INSERT INTO translation (string_id, langabbr, v) VALUES
    (1, 'en', 'Walkability'), (2, 'en', 'How easy and pleasant is it to walk here?'),
    (3, 'en', 'Bikeability'), (4, 'en', 'How easy and pleasant is it to cycle here?'),
    (5, 'en', 'Pleasantness'), (6, 'en', 'How pleasant is this place?'),
    (7, 'en', 'Greenness'), (8, 'en', 'How green is this place?'),
    (9, 'en', 'Safety'), (10, 'en', 'How safe do you feel here?');
INSERT INTO category (shortname_sid, description_sid) VALUES (1, 2), (3, 4), (5, 6), (7, 8), (9, 10);
