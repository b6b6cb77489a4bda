-- view: ese_scores
-- version: 2
-- Every source with its variability statistics and its ESE search result (ese_search):
--   significance   = sigma, the Gaussian-equivalent significance of the search's false-alarm rate (the seed's
--                    field name; --min-sigma selects on it)
--   confidence     high (false-alarm rate <= 1e-4 per source-year), medium (<= 1e-3), low
-- The composite score of eselake 0.1 is retired: it counted chi2_nu and eta (the same number) twice and could
-- select sources without a dip.
CREATE OR REPLACE VIEW ese_scores AS
SELECT v.*, s.* EXCLUDE (source_id, first_mjd, last_mjd),
       s.sigma AS significance,
       CASE WHEN s.fap_per_source_year <= 1e-4 THEN 'high'
            WHEN s.fap_per_source_year <= 1e-3 THEN 'medium' ELSE 'low' END AS confidence
FROM variability_stats v
LEFT JOIN ese_search s USING (source_id);
