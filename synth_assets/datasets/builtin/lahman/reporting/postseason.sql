-- Postseason: series played (a series is a season and round, e.g. 2004 WS), World Series played,
-- postseason batting (at-bats, hits, home runs) and postseason innings pitched.
-- One row per player with a BattingPost or PitchingPost row.
WITH series AS (
    SELECT playerID, yearID, round FROM batting_post
    UNION
    SELECT playerID, yearID, round FROM pitching_post
),
series_counts AS (
    SELECT
        playerID,
        count(*) AS postseason_series,
        count(*) FILTER (WHERE round = 'WS') AS world_series
    FROM series
    GROUP BY playerID
),
post_batting AS (
    SELECT playerID, sum(AB) AS at_bats, sum(H) AS hits, sum(HR) AS home_runs
    FROM batting_post
    GROUP BY playerID
),
post_pitching AS (
    SELECT playerID, sum(IPouts) / 3.0 AS innings
    FROM pitching_post
    GROUP BY playerID
)
SELECT
    s.playerID AS player_id,
    CAST(s.postseason_series AS BIGINT) AS postseason_series,
    CAST(s.world_series AS BIGINT) AS world_series_played,
    CAST(b.at_bats AS BIGINT) AS post_at_bats,
    CAST(b.hits AS BIGINT) AS post_hits,
    CAST(b.home_runs AS BIGINT) AS post_home_runs,
    CAST(round(p.innings, 1) AS DOUBLE) AS post_innings_pitched
FROM series_counts AS s
LEFT JOIN post_batting AS b ON b.playerID = s.playerID
LEFT JOIN post_pitching AS p ON p.playerID = s.playerID
