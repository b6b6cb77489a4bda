-- view: catalog_sources
-- version: 1
-- Catalogue sources of every loaded catalogue (NVSS, FIRST, VLASS, RACS, source lists), one row each.
-- If a source_id appears in several catalogues, each appearance is a row (column `catalog` tells them apart).
CREATE OR REPLACE VIEW catalog_sources AS
SELECT source_id, catalog, name, ra_deg, dec_deg, flux_mjy, flux_err_mjy,
       major_arcsec, minor_arcsec, pa_deg, loaded_at
FROM catalog_sources_files;
