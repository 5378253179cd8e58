-- Pitching career: regular-season pitching totals summed over all seasons and stints.
-- One row per player with at least one Pitching row. ERA and WHIP are NULL without an out recorded.
SELECT
    playerID AS player_id,
    CAST(count(DISTINCT yearID) AS BIGINT) AS pitching_seasons,
    CAST(sum(G) AS BIGINT) AS pitching_games,
    CAST(sum(GS) AS BIGINT) AS games_started,
    CAST(sum(W) AS BIGINT) AS wins,
    CAST(sum(L) AS BIGINT) AS losses,
    CAST(sum(SV) AS BIGINT) AS saves,
    CAST(round(sum(IPouts) / 3.0, 1) AS DOUBLE) AS innings_pitched,
    CAST(sum(SO) AS BIGINT) AS pitcher_strikeouts,
    CAST(round(27.0 * sum(ER) / NULLIF(sum(IPouts), 0), 2) AS DOUBLE) AS era,
    CAST(round(3.0 * (sum(H) + sum(BB)) / NULLIF(sum(IPouts), 0), 3) AS DOUBLE) AS whip
FROM pitching
GROUP BY playerID
