-- view: loo_median
-- version: 2
-- Macro: the median of n sorted values a_1 <= ... <= a_n without one element of value r (leave-one-out), in
-- O(1) from the three middle values m1 = a_lo, m2 = a_lo+1, m3 = a_lo+2 (lo = (n - 1) // 2; a_0 = NULL):
-- the n - 1 remaining values have their middle one position higher or lower depending on whether the removed
-- element lies below or above it. Used so that no source normalises itself (its own flux never enters the
-- gain it is divided by). NULL for n < 2.
CREATE OR REPLACE MACRO loo_median(n, m1, m2, m3, r) AS (
    CASE WHEN n < 2 THEN NULL
         WHEN n % 2 = 0 THEN CASE WHEN r > m2 THEN m2 ELSE m3 END
         ELSE ((CASE WHEN r > m1 THEN m1 ELSE m2 END) + (CASE WHEN r > m2 THEN m2 ELSE m3 END)) / 2.0
    END
);
