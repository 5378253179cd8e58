-- College: years of college baseball, number of colleges, and the US Census region of the primary
-- college (most years there; ties go to the earlier, then alphabetically first school). Schools
-- that cannot be placed (not in the Schools list) give 'Other'.
-- One row per player with a CollegePlaying row.
WITH played AS (
    SELECT c.playerID, c.schoolID, c.yearID, s.state
    FROM college_playing AS c
    LEFT JOIN schools AS s ON s.schoolID = c.schoolID
),
primary_school AS (
    SELECT playerID, state
    FROM (
        SELECT playerID, schoolID, any_value(state) AS state, count(DISTINCT yearID) AS years,
            min(yearID) AS first_year
        FROM played
        GROUP BY playerID, schoolID
    )
    QUALIFY row_number() OVER (PARTITION BY playerID ORDER BY years DESC, first_year, schoolID) = 1
)
SELECT
    p.playerID AS player_id,
    CAST(
        CASE
            WHEN any_value(ps.state) IN ('CT', 'ME', 'MA', 'NH', 'RI', 'VT', 'NJ', 'NY', 'PA')
                THEN 'Northeast'
            WHEN any_value(ps.state) IN (
                'IL', 'IN', 'MI', 'OH', 'WI', 'IA', 'KS', 'MN', 'MO', 'NE', 'ND', 'SD'
            ) THEN 'Midwest'
            WHEN any_value(ps.state) IN (
                'DE', 'DC', 'FL', 'GA', 'MD', 'NC', 'SC', 'VA', 'WV', 'AL', 'KY', 'MS', 'TN',
                'AR', 'LA', 'OK', 'TX'
            ) THEN 'South'
            WHEN any_value(ps.state) IN (
                'AZ', 'CO', 'ID', 'MT', 'NV', 'NM', 'UT', 'WY', 'AK', 'CA', 'HI', 'OR', 'WA'
            ) THEN 'West'
            ELSE 'Other'
        END AS VARCHAR
    ) AS college_region,
    CAST(count(DISTINCT p.yearID) AS BIGINT) AS college_years,
    CAST(count(DISTINCT p.schoolID) AS BIGINT) AS colleges
FROM played AS p
JOIN primary_school AS ps ON ps.playerID = p.playerID
GROUP BY p.playerID
