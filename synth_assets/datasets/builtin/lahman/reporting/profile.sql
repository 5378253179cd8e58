-- Profile: one row per person in People (the population of the wide table).
-- Handedness, birth country (grouped into the main baseball-playing countries, the rest 'Other'),
-- birth year, body measurements, and the years of the first and last major-league game.
-- Birth countries keep the Baseball Databank's own spelling (D.R., P.R., CAN, V.I.).
SELECT
    playerID AS player_id,
    CAST(bats AS VARCHAR) AS bats,
    CAST(throws AS VARCHAR) AS throws,
    CAST(
        CASE
            WHEN birthCountry IS NULL THEN NULL
            WHEN birthCountry IN (
                'USA', 'D.R.', 'Venezuela', 'P.R.', 'CAN', 'Cuba', 'Mexico', 'Japan', 'Panama',
                'South Korea', 'Taiwan', 'Colombia', 'Curacao', 'Aruba', 'Nicaragua', 'Bahamas',
                'V.I.', 'Australia'
            ) THEN birthCountry
            ELSE 'Other'
        END AS VARCHAR
    ) AS birth_country,
    CAST(birthYear AS BIGINT) AS birth_year,
    CAST(height AS BIGINT) AS height_in,
    CAST(weight AS BIGINT) AS weight_lb,
    CAST(year(CAST(debut AS DATE)) AS BIGINT) AS debut_year,
    CAST(year(CAST(finalGame AS DATE)) AS BIGINT) AS final_year,
    CAST(
        CASE
            WHEN debut IS NULL THEN NULL
            WHEN year(CAST(debut AS DATE)) <= 1900 THEN '19th century (1871-1900)'
            WHEN year(CAST(debut AS DATE)) <= 1919 THEN 'Dead-ball (1901-1919)'
            WHEN year(CAST(debut AS DATE)) <= 1941 THEN 'Live-ball (1920-1941)'
            WHEN year(CAST(debut AS DATE)) <= 1960 THEN 'Integration (1942-1960)'
            WHEN year(CAST(debut AS DATE)) <= 1976 THEN 'Expansion (1961-1976)'
            WHEN year(CAST(debut AS DATE)) <= 1993 THEN 'Free agency (1977-1993)'
            WHEN year(CAST(debut AS DATE)) <= 2005 THEN 'Steroid (1994-2005)'
            ELSE 'Post-steroid (2006-)'
        END AS VARCHAR
    ) AS debut_era
FROM people
