-- Honours: awards won, All-Star selections and award-vote shares. One row per player who won an
-- award, was selected to an All-Star game or received MVP / Cy Young / Rookie of the Year votes.
-- Counts are 0 (not NULL) for a player who is in the table through another kind of honour.
-- A vote share is points won / maximum points in one vote, summed over the player's seasons.
WITH honoured AS (
    SELECT playerID FROM awards_players
    UNION
    SELECT playerID FROM awards_share_players
    UNION
    SELECT playerID FROM allstar_full
),
awards AS (
    SELECT
        playerID,
        count(*) AS awards_won,
        count(*) FILTER (WHERE awardID = 'Most Valuable Player') AS mvp_awards,
        count(*) FILTER (WHERE awardID = 'Cy Young Award') AS cy_young_awards,
        count(*) FILTER (WHERE awardID = 'Gold Glove') AS gold_gloves
    FROM awards_players
    GROUP BY playerID
),
all_star AS (
    SELECT playerID, count(DISTINCT yearID) AS all_star_selections
    FROM allstar_full
    GROUP BY playerID
),
votes AS (
    SELECT
        playerID,
        sum(pointsWon / NULLIF(pointsMax, 0)) FILTER (WHERE awardID = 'MVP') AS mvp_vote_share,
        sum(pointsWon / NULLIF(pointsMax, 0)) FILTER (WHERE awardID = 'Cy Young') AS cy_young_vote_share
    FROM awards_share_players
    GROUP BY playerID
)
SELECT
    h.playerID AS player_id,
    CAST(coalesce(s.all_star_selections, 0) AS BIGINT) AS all_star_selections,
    CAST(coalesce(a.awards_won, 0) AS BIGINT) AS awards_won,
    CAST(coalesce(a.mvp_awards, 0) AS BIGINT) AS mvp_awards,
    CAST(coalesce(a.cy_young_awards, 0) AS BIGINT) AS cy_young_awards,
    CAST(coalesce(a.gold_gloves, 0) AS BIGINT) AS gold_gloves,
    CAST(round(coalesce(v.mvp_vote_share, 0), 3) AS DOUBLE) AS mvp_vote_share,
    CAST(round(coalesce(v.cy_young_vote_share, 0), 3) AS DOUBLE) AS cy_young_vote_share
FROM honoured AS h
LEFT JOIN awards AS a ON a.playerID = h.playerID
LEFT JOIN all_star AS s ON s.playerID = h.playerID
LEFT JOIN votes AS v ON v.playerID = h.playerID
