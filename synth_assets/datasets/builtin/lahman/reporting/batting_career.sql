-- Batting career: regular-season batting totals summed over all seasons and stints.
-- One row per player with at least one Batting row. Rates are NULL when there is no at-bat.
SELECT
    playerID AS player_id,
    CAST(count(DISTINCT yearID) AS BIGINT) AS batting_seasons,
    CAST(sum(G) AS BIGINT) AS batting_games,
    CAST(sum(AB) AS BIGINT) AS at_bats,
    CAST(sum(R) AS BIGINT) AS runs,
    CAST(sum(H) AS BIGINT) AS hits,
    CAST(sum(HR) AS BIGINT) AS home_runs,
    CAST(sum(RBI) AS BIGINT) AS rbi,
    CAST(sum(SB) AS BIGINT) AS stolen_bases,
    CAST(sum(BB) AS BIGINT) AS walks,
    CAST(sum(SO) AS BIGINT) AS strikeouts,
    CAST(round(sum(H) / NULLIF(sum(AB), 0), 3) AS DOUBLE) AS batting_avg,
    CAST(
        round((sum(H) + sum("2B") + 2 * sum("3B") + 3 * sum(HR)) / NULLIF(sum(AB), 0), 3) AS DOUBLE
    ) AS slugging_pct
FROM batting
GROUP BY playerID
