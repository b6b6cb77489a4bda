-- view: loo_median
-- version: 1
-- Macro: the median of the sorted list a without one element of value r (leave-one-out), in O(1): with
-- n = len(a) and the element's rank k, the remaining m = n - 1 values have their middle at a[j] or a[j + 1]
-- depending on whether k lies above or below. Used so that no source normalises itself (its own flux never
-- enters the gain it is divided by). NULL for fewer than 2 elements.
CREATE OR REPLACE MACRO loo_median(a, r) AS (
    CASE WHEN len(a) < 2 THEN NULL
         WHEN len(a) % 2 = 0 THEN                                   -- m odd: the (n/2)-th remaining value
             CASE WHEN r > a[len(a) // 2] THEN a[len(a) // 2] ELSE a[len(a) // 2 + 1] END
         ELSE ((CASE WHEN r > a[(len(a) - 1) // 2] THEN a[(len(a) - 1) // 2] ELSE a[(len(a) - 1) // 2 + 1] END)
             + (CASE WHEN r > a[(len(a) - 1) // 2 + 1] THEN a[(len(a) - 1) // 2 + 1]
                     ELSE a[(len(a) - 1) // 2 + 2] END)) / 2.0
    END
);
