-- view: photometry
-- version: 1
-- The seed's photometry table: committed measurements with image metadata.
CREATE OR REPLACE VIEW photometry AS
SELECT * FROM measurements;
