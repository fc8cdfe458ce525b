-- Nothing to change on SQLite: its outbox index by age is a B-tree, which finds the rows to
-- prune directly. (Postgres's 0009 drops a BRIN index that read the whole recent outbox at every
-- sweep; the two dialects keep the same migration numbers.)
SELECT 1;
