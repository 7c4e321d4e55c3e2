-- Sink state: a batch's "landed" row, written after all of the batch's inserts returned.
--
-- ClickHouse commits the part of the table an INSERT names, then the parts of the materialized views
-- that read it (the hourly/daily rollups, the model registry). A sink killed between the two leaves
-- the rows without their rollups. On restart the sink redoes its last batch: when the rows are there
-- but the batch has no landed row, it inserts the batch again with the same deduplication token, so
-- the table drops it and each view, which deduplicates by itself
-- (deduplicate_blocks_in_dependent_materialized_views), takes only what it missed. A batch that has
-- its landed row (as every batch in a backup has: backups run between two batches) is not inserted
-- again: a restored table has lost its deduplication log and would take the rows twice.
--
-- The landed row has the intent row's key, so ReplacingMergeTree(committed_at) keeps it alone.

ALTER TABLE sink_offsets ADD COLUMN IF NOT EXISTS landed UInt8 DEFAULT 0;
