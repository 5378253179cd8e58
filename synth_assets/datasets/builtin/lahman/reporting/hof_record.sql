-- Hall of Fame: one row per person who appeared in Hall of Fame voting (as a player, manager,
-- executive or umpire). hof_status says whether and how he was inducted: by the writers (BBWAA,
-- including its run-off and special elections) or by a committee (Veterans, Old Timers, Negro
-- League, Centennial). hof_max_vote_pct is the best share of ballots in a vote with counted ballots
-- (NULL when he was only ever considered by a committee without published ballots).
SELECT
    playerID AS player_id,
    CAST(
        CASE
            WHEN bool_or(inducted = 'Y' AND votedBy IN ('BBWAA', 'Run Off', 'Special Election'))
                THEN 'Inducted by BBWAA'
            WHEN bool_or(inducted = 'Y') THEN 'Inducted by committee'
            ELSE 'Not inducted'
        END AS VARCHAR
    ) AS hof_status,
    CAST(count(DISTINCT yearID) AS BIGINT) AS hof_ballot_years,
    CAST(min(yearID) AS BIGINT) AS hof_first_year,
    CAST(round(max(100.0 * votes / NULLIF(ballots, 0)), 1) AS DOUBLE) AS hof_max_vote_pct
FROM hall_of_fame
GROUP BY playerID
