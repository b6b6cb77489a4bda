-- view: middle3
-- version: 1
-- Macro: the three middle values [a_lo, a_lo+1, a_lo+2] (lo = (n - 1) // 2) of a sorted list, for loo_median.
CREATE OR REPLACE MACRO middle3(a) AS
    [a[(len(a) - 1) // 2], a[(len(a) - 1) // 2 + 1], a[(len(a) - 1) // 2 + 2]];
