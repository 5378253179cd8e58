-- Teams and career length from Appearances: seasons, franchises, team-seasons and games, plus the
-- primary franchise and league (most games played; ties go to the first id in alphabetical order).
-- One row per player with at least one Appearances row who is also in People.
WITH apps AS (
    SELECT a.playerID, a.yearID, a.teamID, a.lgID, a.G_all, t.franchID
    FROM appearances AS a
    JOIN teams AS t ON t.yearID = a.yearID AND t.teamID = a.teamID
    WHERE a.playerID IN (SELECT playerID FROM people)
),
primary_franchise AS (
    SELECT playerID, franchID
    FROM (SELECT playerID, franchID, sum(G_all) AS games FROM apps GROUP BY playerID, franchID)
    QUALIFY row_number() OVER (PARTITION BY playerID ORDER BY games DESC NULLS LAST, franchID) = 1
),
primary_league AS (
    SELECT playerID, lgID
    FROM (SELECT playerID, lgID, sum(G_all) AS games FROM apps GROUP BY playerID, lgID)
    QUALIFY row_number() OVER (PARTITION BY playerID ORDER BY games DESC NULLS LAST, lgID) = 1
)
SELECT
    a.playerID AS player_id,
    CAST(any_value(f.franchID) AS VARCHAR) AS primary_franchise,
    CAST(any_value(l.lgID) AS VARCHAR) AS primary_league,
    CAST(count(DISTINCT a.yearID) AS BIGINT) AS career_seasons,
    CAST(count(DISTINCT a.franchID) AS BIGINT) AS franchises,
    CAST(count(DISTINCT (a.yearID, a.teamID)) AS BIGINT) AS team_seasons,
    CAST(sum(a.G_all) AS BIGINT) AS career_games
FROM apps AS a
JOIN primary_franchise AS f ON f.playerID = a.playerID
JOIN primary_league AS l ON l.playerID = a.playerID
GROUP BY a.playerID
