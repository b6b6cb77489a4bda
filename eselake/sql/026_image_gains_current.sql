-- view: image_gains_current
-- version: 1
-- The image gains the photometry view uses. On a plain connection this is image_gains itself; Lake.sql()
-- points it at a per-process copy of image_gains that it rebuilds whenever any file of the lake changes
-- (so single-source queries do not recompute the ensemble normalisation of the whole lake every time).
CREATE OR REPLACE VIEW image_gains_current AS SELECT * FROM image_gains;
