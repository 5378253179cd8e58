-- Mothers: one row per woman in AER's 'Fertility' table (1980 US Census, married women aged 21-35
-- with two or more children), the population and only reporting table of the dataset.
--
-- The table has no identifier of its own. Its R row names (1 to 254,654, the order in which Stock and
-- Watson published the extract) ship with the data as the column 'rownames' and are used as the
-- entity key: a stable key, the same as row_number() over the published order, that names a row of
-- the extract and nobody in the census. Columns are renamed from AER's names (in brackets below);
-- values are kept as AER codes them ('yes' / 'no', 'male' / 'female').
SELECT
    CAST(rownames AS BIGINT) AS mother_id,
    CAST(morekids AS VARCHAR) AS more_kids,          -- [morekids] more than two children?
    CAST(gender1 AS VARCHAR) AS first_child_sex,     -- [gender1]
    CAST(gender2 AS VARCHAR) AS second_child_sex,    -- [gender2]
    CAST(age AS BIGINT) AS age,                      -- [age] age of the mother at the census
    CAST(afam AS VARCHAR) AS african_american,       -- [afam]
    CAST(hispanic AS VARCHAR) AS hispanic,           -- [hispanic]
    CAST(other AS VARCHAR) AS other_race,            -- [other] neither African-American, Hispanic nor white
    CAST(work AS BIGINT) AS weeks_worked             -- [work] weeks worked in 1979
FROM fertility
