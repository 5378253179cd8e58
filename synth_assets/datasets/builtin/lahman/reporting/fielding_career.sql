-- Fielding career: the primary position (most games fielded; ties go to the first position in
-- alphabetical order), how many positions were played, and career fielding totals.
-- One row per player with at least one Fielding row. Outfield positions are combined as OF.
WITH by_position AS (
    SELECT playerID, POS, sum(G) AS games
    FROM fielding
    GROUP BY playerID, POS
),
primary_position AS (
    SELECT playerID, POS
    FROM by_position
    QUALIFY row_number() OVER (PARTITION BY playerID ORDER BY games DESC NULLS LAST, POS) = 1
)
SELECT
    f.playerID AS player_id,
    CAST(any_value(p.POS) AS VARCHAR) AS primary_position,
    CAST(count(DISTINCT f.POS) AS BIGINT) AS positions_played,
    CAST(sum(f.G) AS BIGINT) AS fielding_games,
    CAST(sum(f.PO) AS BIGINT) AS putouts,
    CAST(sum(f.A) AS BIGINT) AS assists,
    CAST(round((sum(f.PO) + sum(f.A)) / NULLIF(sum(f.PO) + sum(f.A) + sum(f.E), 0), 3) AS DOUBLE)
        AS fielding_pct
FROM fielding AS f
JOIN primary_position AS p ON p.playerID = f.playerID
GROUP BY f.playerID
