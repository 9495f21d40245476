-- KPI-complete call records (issue 13): the site's zone each call was taken in (site.timezone), so a
-- central store can bucket by the site's day, and whether a `resolved: true` node completed (containment).
-- NULL for calls recorded before this migration: unknown, never guessed.
ALTER TABLE calls ADD COLUMN zone TEXT;
ALTER TABLE calls ADD COLUMN resolved INTEGER;
