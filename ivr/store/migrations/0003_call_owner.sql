-- Which process runs each call (its owner lock under <db>.owners/), so that opening the log beside a
-- running daemon closes as interrupted only the calls whose process is gone. NULL for older rows.
ALTER TABLE calls ADD COLUMN owner TEXT;
