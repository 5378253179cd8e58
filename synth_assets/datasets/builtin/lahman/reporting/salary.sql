-- Salary history (the Databank has salaries for 1985-2016 only): seasons with a salary, first salary
-- season, career total, and the mean and highest salary per season (a season's salary is summed over
-- the teams that paid him that year). One row per player with at least one Salaries row. US dollars.
WITH per_season AS (
    SELECT playerID, yearID, sum(salary) AS salary
    FROM salaries
    GROUP BY playerID, yearID
)
SELECT
    playerID AS player_id,
    CAST(count(*) AS BIGINT) AS salary_seasons,
    CAST(min(yearID) AS BIGINT) AS salary_first_year,
    CAST(sum(salary) AS BIGINT) AS salary_total,
    CAST(round(avg(salary)) AS BIGINT) AS salary_mean,
    CAST(max(salary) AS BIGINT) AS salary_max
FROM per_season
GROUP BY playerID
