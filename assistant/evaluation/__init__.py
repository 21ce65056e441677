"""Head-to-head evaluation: `runner` (answers, cached) -> `scoring` (outcomes and graded metrics,
built on `metrics` and `stats`) -> `verdict` (the recommendation) -> `report` (+ `plots`)."""
