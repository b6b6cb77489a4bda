-- view: reference_baselines_current
-- version: 1
-- The reference baselines the ensemble normalisation (image_gains) uses. The reference set and its baselines
-- are frozen between full refreshes: once `eselake refresh` has persisted source_baselines as the derived
-- dataset reference_baselines, every connection reads that (so a new image costs only its own gain, and a
-- source never changes the gains of images measured before it). Until then, source_baselines itself.
CREATE OR REPLACE VIEW reference_baselines_current AS SELECT * FROM source_baselines;
