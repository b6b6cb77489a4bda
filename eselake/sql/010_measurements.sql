-- view: measurements
-- version: 2
-- Committed forced-photometry rows (one per source per image) with the metadata of their image.
-- Each image's rows are replaced in one Delta transaction (photometry first, then its images row), so the
-- join is on image_id: rows of an image whose first measurement was interrupted before its images row are hidden.
CREATE OR REPLACE VIEW measurements AS
SELECT
    p.source_id,
    p.image_id,
    p.image_path,
    p.mjd,
    p.ra_deg,
    p.dec_deg,
    p.peak_jyb,
    p.peak_err_jyb,
    p.local_rms_jyb,
    p.snr,
    p.chi2,
    p.dof,
    p.flags,
    p.blend_group,
    p.catalog_flux_mjy,
    p.sep_from_center_deg,
    p.freq_hz,
    i.night,
    i.kind AS image_kind,
    i.rms_jyb AS image_rms_jyb,
    i.bmaj_deg,
    i.bmin_deg,
    i.bpa_deg,
    i.ingested_at,
    i.pipeline_version
FROM photometry_files AS p
JOIN images AS i ON p.image_id = i.image_id;
