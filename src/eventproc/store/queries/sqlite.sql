-- eventproc's lifecycle statements on SQLite (sqlite3: ?N parameters, the
-- same positions as postgresql.sql's $N, so that the store builds one
-- argument list for both). The same names are in postgresql.sql. Times are
-- UTC text in the form strftime('%Y-%m-%d %H:%M:%f') writes, so that they
-- compare as times. A list argument arrives as a JSON array; the columns of
-- a batch are zipped by position (`?2 ->> i.key`, the element of ?2 at i's
-- index). A named query may be several statements: the driver runs them in
-- one transaction, in order, and returns the rows of all of them.
--
-- Claims: ?1 token, ?2 lease seconds, ?3 limit, ?4 window (ordered claims
-- test only the first ?4 available events against the aggregate gate; the
-- unordered ones take it so that every claim has the same parameters).
-- Writers are serialized (BEGIN IMMEDIATE), so a claim needs no SKIP LOCKED.
-- A carrying claim first completes ?5 ids / ?6 tokens / ?7 outcomes for
-- worker ?8 (in order, for the ordered claims) in the same transaction: the
-- claim then sees those events done.

-- name: event_claim
WITH picked AS (
    SELECT e.id FROM events e
    WHERE e.processed = 0
      AND (e.next_attempt_at IS NULL OR e.next_attempt_at <= strftime('%Y-%m-%d %H:%M:%f', 'now'))
      AND (e.locked_until IS NULL OR e.locked_until < strftime('%Y-%m-%d %H:%M:%f', 'now'))
      AND ?4 > 0
    ORDER BY e.priority DESC, e.created_at, e.id
    LIMIT ?3
)
UPDATE events
SET locked_by = ?1, locked_until = strftime('%Y-%m-%d %H:%M:%f', 'now', printf('%+.3f seconds', ?2)),
    attempts = events.attempts + 1
FROM picked WHERE events.id = picked.id
RETURNING id, event_type, aggregate_id, aggregate_type, payload, metadata, processed, version,
          created_at, created_by, priority, attempts, next_attempt_at, locked_by,
          locked_until, processed_at, outcome;

-- name: event_claim_carrying
-- The completions, then the claim.
UPDATE events
SET processed = 1, outcome = c.outcome, processed_at = strftime('%Y-%m-%d %H:%M:%f', 'now'),
    locked_by = NULL, locked_until = NULL, next_attempt_at = NULL,
    metadata = json_patch(coalesce(metadata, '{}'),
                          json_object('processed_at', strftime('%Y-%m-%d %H:%M:%f', 'now'),
                                      'processed_by', ?8))
FROM (SELECT i.value AS id, ?6 ->> i.key AS token, ?7 ->> i.key AS outcome
      FROM json_each(?5) AS i) AS c
WHERE events.id = c.id AND events.locked_by = c.token;
WITH picked AS (
    SELECT e.id FROM events e
    WHERE e.processed = 0
      AND (e.next_attempt_at IS NULL OR e.next_attempt_at <= strftime('%Y-%m-%d %H:%M:%f', 'now'))
      AND (e.locked_until IS NULL OR e.locked_until < strftime('%Y-%m-%d %H:%M:%f', 'now'))
      AND ?4 > 0
    ORDER BY e.priority DESC, e.created_at, e.id
    LIMIT ?3
)
UPDATE events
SET locked_by = ?1, locked_until = strftime('%Y-%m-%d %H:%M:%f', 'now', printf('%+.3f seconds', ?2)),
    attempts = events.attempts + 1
FROM picked WHERE events.id = picked.id
RETURNING id, event_type, aggregate_id, aggregate_type, payload, metadata, processed, version,
          created_at, created_by, priority, attempts, next_attempt_at, locked_by,
          locked_until, processed_at, outcome;

-- name: event_claim_ordered
-- The gate: no earlier event of the same aggregate is still pending.
WITH picked AS (
    SELECT e.id FROM events e
    WHERE e.id IN (
            SELECT w.id FROM events w
            WHERE w.processed = 0
              AND (w.next_attempt_at IS NULL
                   OR w.next_attempt_at <= strftime('%Y-%m-%d %H:%M:%f', 'now'))
              AND (w.locked_until IS NULL
                   OR w.locked_until < strftime('%Y-%m-%d %H:%M:%f', 'now'))
            ORDER BY w.priority DESC, w.created_at, w.id
            LIMIT ?4)
      AND e.processed = 0
      AND (e.next_attempt_at IS NULL OR e.next_attempt_at <= strftime('%Y-%m-%d %H:%M:%f', 'now'))
      AND (e.locked_until IS NULL OR e.locked_until < strftime('%Y-%m-%d %H:%M:%f', 'now'))
      AND (e.aggregate_id IS NULL OR NOT EXISTS (
            SELECT 1 FROM events p
            WHERE p.aggregate_id = e.aggregate_id AND p.processed = 0
              AND (p.created_at, p.id) < (e.created_at, e.id)))
    ORDER BY e.priority DESC, e.created_at, e.id
    LIMIT ?3
)
UPDATE events
SET locked_by = ?1, locked_until = strftime('%Y-%m-%d %H:%M:%f', 'now', printf('%+.3f seconds', ?2)),
    attempts = events.attempts + 1
FROM picked WHERE events.id = picked.id
RETURNING id, event_type, aggregate_id, aggregate_type, payload, metadata, processed, version,
          created_at, created_by, priority, attempts, next_attempt_at, locked_by,
          locked_until, processed_at, outcome;

-- name: event_claim_ordered_carrying
-- The completions (in order, see event_write_back), then the claim.
UPDATE events
SET processed = 1, outcome = c.outcome, processed_at = strftime('%Y-%m-%d %H:%M:%f', 'now'),
    locked_by = NULL, locked_until = NULL, next_attempt_at = NULL,
    metadata = json_patch(coalesce(metadata, '{}'),
                          json_object('processed_at', strftime('%Y-%m-%d %H:%M:%f', 'now'),
                                      'processed_by', ?8))
FROM (SELECT i.value AS id, ?6 ->> i.key AS token, ?7 ->> i.key AS outcome
      FROM json_each(?5) AS i) AS c
WHERE events.id = c.id AND events.locked_by = c.token
  AND (aggregate_id IS NULL OR NOT EXISTS (
      SELECT 1 FROM events p
      WHERE p.aggregate_id = events.aggregate_id AND p.processed = 0
        AND (p.created_at, p.id) < (events.created_at, events.id)
        AND NOT EXISTS (
            SELECT 1 FROM json_each(?5) AS f
            WHERE f.value = p.id AND ?6 ->> f.key = p.locked_by)));
WITH picked AS (
    SELECT e.id FROM events e
    WHERE e.id IN (
            SELECT w.id FROM events w
            WHERE w.processed = 0
              AND (w.next_attempt_at IS NULL
                   OR w.next_attempt_at <= strftime('%Y-%m-%d %H:%M:%f', 'now'))
              AND (w.locked_until IS NULL
                   OR w.locked_until < strftime('%Y-%m-%d %H:%M:%f', 'now'))
            ORDER BY w.priority DESC, w.created_at, w.id
            LIMIT ?4)
      AND e.processed = 0
      AND (e.next_attempt_at IS NULL OR e.next_attempt_at <= strftime('%Y-%m-%d %H:%M:%f', 'now'))
      AND (e.locked_until IS NULL OR e.locked_until < strftime('%Y-%m-%d %H:%M:%f', 'now'))
      AND (e.aggregate_id IS NULL OR NOT EXISTS (
            SELECT 1 FROM events p
            WHERE p.aggregate_id = e.aggregate_id AND p.processed = 0
              AND (p.created_at, p.id) < (e.created_at, e.id)))
    ORDER BY e.priority DESC, e.created_at, e.id
    LIMIT ?3
)
UPDATE events
SET locked_by = ?1, locked_until = strftime('%Y-%m-%d %H:%M:%f', 'now', printf('%+.3f seconds', ?2)),
    attempts = events.attempts + 1
FROM picked WHERE events.id = picked.id
RETURNING id, event_type, aggregate_id, aggregate_type, payload, metadata, processed, version,
          created_at, created_by, priority, attempts, next_attempt_at, locked_by,
          locked_until, processed_at, outcome;

-- name: event_claim_ordered_blocking
-- AGGREGATE_FAILURE=block: a dead-lettered earlier event holds back too.
WITH picked AS (
    SELECT e.id FROM events e
    WHERE e.id IN (
            SELECT w.id FROM events w
            WHERE w.processed = 0
              AND (w.next_attempt_at IS NULL
                   OR w.next_attempt_at <= strftime('%Y-%m-%d %H:%M:%f', 'now'))
              AND (w.locked_until IS NULL
                   OR w.locked_until < strftime('%Y-%m-%d %H:%M:%f', 'now'))
            ORDER BY w.priority DESC, w.created_at, w.id
            LIMIT ?4)
      AND e.processed = 0
      AND (e.next_attempt_at IS NULL OR e.next_attempt_at <= strftime('%Y-%m-%d %H:%M:%f', 'now'))
      AND (e.locked_until IS NULL OR e.locked_until < strftime('%Y-%m-%d %H:%M:%f', 'now'))
      AND (e.aggregate_id IS NULL OR (
            NOT EXISTS (
                SELECT 1 FROM events p
                WHERE p.aggregate_id = e.aggregate_id AND p.processed = 0
                  AND (p.created_at, p.id) < (e.created_at, e.id))
            AND NOT EXISTS (
                SELECT 1 FROM events p
                WHERE p.aggregate_id = e.aggregate_id AND p.outcome = 'dead_lettered'
                  AND (p.created_at, p.id) < (e.created_at, e.id))))
    ORDER BY e.priority DESC, e.created_at, e.id
    LIMIT ?3
)
UPDATE events
SET locked_by = ?1, locked_until = strftime('%Y-%m-%d %H:%M:%f', 'now', printf('%+.3f seconds', ?2)),
    attempts = events.attempts + 1
FROM picked WHERE events.id = picked.id
RETURNING id, event_type, aggregate_id, aggregate_type, payload, metadata, processed, version,
          created_at, created_by, priority, attempts, next_attempt_at, locked_by,
          locked_until, processed_at, outcome;

-- name: event_claim_ordered_blocking_carrying
-- The completions (in order, see event_write_back), then the claim.
UPDATE events
SET processed = 1, outcome = c.outcome, processed_at = strftime('%Y-%m-%d %H:%M:%f', 'now'),
    locked_by = NULL, locked_until = NULL, next_attempt_at = NULL,
    metadata = json_patch(coalesce(metadata, '{}'),
                          json_object('processed_at', strftime('%Y-%m-%d %H:%M:%f', 'now'),
                                      'processed_by', ?8))
FROM (SELECT i.value AS id, ?6 ->> i.key AS token, ?7 ->> i.key AS outcome
      FROM json_each(?5) AS i) AS c
WHERE events.id = c.id AND events.locked_by = c.token
  AND (aggregate_id IS NULL OR NOT EXISTS (
      SELECT 1 FROM events p
      WHERE p.aggregate_id = events.aggregate_id AND p.processed = 0
        AND (p.created_at, p.id) < (events.created_at, events.id)
        AND NOT EXISTS (
            SELECT 1 FROM json_each(?5) AS f
            WHERE f.value = p.id AND ?6 ->> f.key = p.locked_by)));
WITH picked AS (
    SELECT e.id FROM events e
    WHERE e.id IN (
            SELECT w.id FROM events w
            WHERE w.processed = 0
              AND (w.next_attempt_at IS NULL
                   OR w.next_attempt_at <= strftime('%Y-%m-%d %H:%M:%f', 'now'))
              AND (w.locked_until IS NULL
                   OR w.locked_until < strftime('%Y-%m-%d %H:%M:%f', 'now'))
            ORDER BY w.priority DESC, w.created_at, w.id
            LIMIT ?4)
      AND e.processed = 0
      AND (e.next_attempt_at IS NULL OR e.next_attempt_at <= strftime('%Y-%m-%d %H:%M:%f', 'now'))
      AND (e.locked_until IS NULL OR e.locked_until < strftime('%Y-%m-%d %H:%M:%f', 'now'))
      AND (e.aggregate_id IS NULL OR (
            NOT EXISTS (
                SELECT 1 FROM events p
                WHERE p.aggregate_id = e.aggregate_id AND p.processed = 0
                  AND (p.created_at, p.id) < (e.created_at, e.id))
            AND NOT EXISTS (
                SELECT 1 FROM events p
                WHERE p.aggregate_id = e.aggregate_id AND p.outcome = 'dead_lettered'
                  AND (p.created_at, p.id) < (e.created_at, e.id))))
    ORDER BY e.priority DESC, e.created_at, e.id
    LIMIT ?3
)
UPDATE events
SET locked_by = ?1, locked_until = strftime('%Y-%m-%d %H:%M:%f', 'now', printf('%+.3f seconds', ?2)),
    attempts = events.attempts + 1
FROM picked WHERE events.id = picked.id
RETURNING id, event_type, aggregate_id, aggregate_type, payload, metadata, processed, version,
          created_at, created_by, priority, attempts, next_attempt_at, locked_by,
          locked_until, processed_at, outcome;

-- name: event_write_back
-- Every kind of result of a batch, in one transaction (see postgresql.sql
-- for the parameters and what each kind means): the successes, the
-- retries, the dead letters inserted, then their events closed (the insert
-- reads the fence before the close clears it). Returns the id of every event
-- written (a dead-lettered one twice).
UPDATE events
SET processed = 1, outcome = c.outcome, processed_at = strftime('%Y-%m-%d %H:%M:%f', 'now'),
    locked_by = NULL, locked_until = NULL, next_attempt_at = NULL,
    metadata = json_patch(coalesce(metadata, '{}'),
                          json_object('processed_at', strftime('%Y-%m-%d %H:%M:%f', 'now'),
                                      'processed_by', ?4))
FROM (SELECT i.value AS id, ?2 ->> i.key AS token, ?3 ->> i.key AS outcome
      FROM json_each(?1) AS i) AS c
WHERE events.id = c.id AND events.locked_by = c.token
  AND (NOT ?5 OR aggregate_id IS NULL OR NOT EXISTS (
      SELECT 1 FROM events p
      WHERE p.aggregate_id = events.aggregate_id AND p.processed = 0
        AND (p.created_at, p.id) < (events.created_at, events.id)
        AND NOT EXISTS (
            SELECT 1 FROM json_each(?1) AS f
            WHERE f.value = p.id AND ?2 ->> f.key = p.locked_by)))
RETURNING id;
UPDATE events
SET locked_by = NULL, locked_until = NULL,
    next_attempt_at = strftime('%Y-%m-%d %H:%M:%f', 'now', printf('%+.3f seconds', r.delay)),
    attempts = CASE WHEN r.counted THEN events.attempts ELSE events.attempts - 1 END,
    metadata = CASE
        WHEN r.counted THEN json_patch(coalesce(events.metadata, '{}'),
             json_object('retry_count', r.attempt, 'last_error', r.error,
                         'last_error_at', strftime('%Y-%m-%d %H:%M:%f', 'now')))
        ELSE events.metadata
    END
FROM (SELECT i.value AS id, ?7 ->> i.key AS token, ?8 ->> i.key AS delay,
             ?9 ->> i.key AS error, ?10 ->> i.key AS attempt, ?11 ->> i.key AS counted
      FROM json_each(?6) AS i) AS r
WHERE events.id = r.id AND events.locked_by = r.token
RETURNING id;
INSERT INTO event_dead_letters (id, event_id, event_type, payload, error_message, retry_count,
                                original_created_at, created_at, error_detail, handler,
                                error_fingerprint)
SELECT lower(hex(randomblob(4)) || '-' || hex(randomblob(2)) || '-4'
             || substr(hex(randomblob(2)), 2) || '-'
             || substr('89ab', 1 + (abs(random()) % 4), 1)
             || substr(hex(randomblob(2)), 2) || '-' || hex(randomblob(6))),
       e.id, e.event_type, e.payload, ?14 ->> i.key, ?15 ->> i.key,
       coalesce(e.created_at, strftime('%Y-%m-%d %H:%M:%f', 'now')), strftime('%Y-%m-%d %H:%M:%f', 'now'),
       ?16 ->> i.key, ?17 ->> i.key, ?18 ->> i.key
FROM json_each(?12) AS i
JOIN events e ON e.id = i.value AND e.locked_by = ?13 ->> i.key
RETURNING event_id;
UPDATE events
SET processed = 1, outcome = 'dead_lettered', processed_at = strftime('%Y-%m-%d %H:%M:%f', 'now'),
    locked_by = NULL, locked_until = NULL, next_attempt_at = NULL,
    metadata = json_patch(coalesce(metadata, '{}'), json_object(
        'retry_count', b.retry_count, 'last_error', substr(b.error, 1, 2000),
        'last_error_at', strftime('%Y-%m-%d %H:%M:%f', 'now'),
        'processed_at', strftime('%Y-%m-%d %H:%M:%f', 'now'),
        'processed_by', ?4, 'dead_lettered', json('true')))
FROM (SELECT i.value AS id, ?13 ->> i.key AS token, ?14 ->> i.key AS error,
             ?15 ->> i.key AS retry_count
      FROM json_each(?12) AS i) AS b
WHERE events.id = b.id AND events.locked_by = b.token
RETURNING id;

-- name: event_hold
-- A transactional handler's first statement: the lease ?1 / ?2 is still ours.
UPDATE events SET locked_until = locked_until
WHERE id = ?1 AND locked_by = ?2
RETURNING id;

-- name: event_release
-- Give claims back unfinished (?1 ids, ?2 tokens): the attempt is not spent.
UPDATE events
SET locked_by = NULL, locked_until = NULL, attempts = events.attempts - 1
FROM (SELECT i.value AS id, ?2 ->> i.key AS token FROM json_each(?1) AS i) AS l
WHERE events.id = l.id AND events.locked_by = l.token
RETURNING id;

-- name: event_renew
-- Extend the leases ?1 ids / ?2 tokens by ?3 seconds from now.
UPDATE events
SET locked_until = strftime('%Y-%m-%d %H:%M:%f', 'now', printf('%+.3f seconds', ?3))
FROM (SELECT i.value AS id, ?2 ->> i.key AS token FROM json_each(?1) AS i) AS l
WHERE events.id = l.id AND events.locked_by = l.token
RETURNING id;

-- name: event_replay
-- Make the processed events ?1 pending again; the replay trigger does the rest.
UPDATE events
SET processed = 0,
    metadata = json_patch(coalesce(metadata, '{}'),
                          json_object('replayed', json('true'), 'replayed_at', strftime('%Y-%m-%d %H:%M:%f', 'now')))
WHERE id IN (SELECT value FROM json_each(?1)) AND processed = 1
RETURNING id;

-- name: event_claim_one
-- A manual trigger: claim event ?1 for token ?2 for ?3 seconds now, even if
-- its retry is not due yet; never past another worker's live lease.
UPDATE events
SET locked_by = ?2, locked_until = strftime('%Y-%m-%d %H:%M:%f', 'now', printf('%+.3f seconds', ?3)),
    attempts = attempts + 1, next_attempt_at = NULL
WHERE id = ?1 AND processed = 0
  AND (locked_until IS NULL OR locked_until < strftime('%Y-%m-%d %H:%M:%f', 'now'))
RETURNING id, event_type, aggregate_id, aggregate_type, payload, metadata, processed, version,
          created_at, created_by, priority, attempts, next_attempt_at, locked_by,
          locked_until, processed_at, outcome;

-- name: event_claim_one_ordered
-- ... and not while an earlier event of its aggregate is pending.
UPDATE events
SET locked_by = ?2, locked_until = strftime('%Y-%m-%d %H:%M:%f', 'now', printf('%+.3f seconds', ?3)),
    attempts = attempts + 1, next_attempt_at = NULL
WHERE id = ?1 AND processed = 0
  AND (locked_until IS NULL OR locked_until < strftime('%Y-%m-%d %H:%M:%f', 'now'))
  AND (aggregate_id IS NULL OR NOT EXISTS (
        SELECT 1 FROM events p
        WHERE p.aggregate_id = events.aggregate_id AND p.processed = 0
          AND (p.created_at, p.id) < (events.created_at, events.id)))
RETURNING id, event_type, aggregate_id, aggregate_type, payload, metadata, processed, version,
          created_at, created_by, priority, attempts, next_attempt_at, locked_by,
          locked_until, processed_at, outcome;

-- name: event_claim_one_ordered_blocking
-- ... nor behind a dead-lettered one (AGGREGATE_FAILURE=block).
UPDATE events
SET locked_by = ?2, locked_until = strftime('%Y-%m-%d %H:%M:%f', 'now', printf('%+.3f seconds', ?3)),
    attempts = attempts + 1, next_attempt_at = NULL
WHERE id = ?1 AND processed = 0
  AND (locked_until IS NULL OR locked_until < strftime('%Y-%m-%d %H:%M:%f', 'now'))
  AND (aggregate_id IS NULL OR NOT EXISTS (
        SELECT 1 FROM events p
        WHERE p.aggregate_id = events.aggregate_id
          AND (p.processed = 0 OR p.outcome = 'dead_lettered')
          AND (p.created_at, p.id) < (events.created_at, events.id)))
RETURNING id, event_type, aggregate_id, aggregate_type, payload, metadata, processed, version,
          created_at, created_by, priority, attempts, next_attempt_at, locked_by,
          locked_until, processed_at, outcome;

-- name: event_revoke_stale_runs
-- Take back the rest of the runs behind heads just taken over (?1 their
-- aggregates): see postgresql.sql. Writers are serialized: nothing to skip.
UPDATE events SET locked_by = NULL, locked_until = NULL
WHERE aggregate_id IN (SELECT value FROM json_each(?1)) AND processed = 0
  AND locked_by IS NOT NULL AND locked_by <> ?2
RETURNING id;

-- name: event_runs_behind
-- For each head ?1: the first ?2 events of its aggregate that are pending
-- (or, with ?3, dead-lettered), in order, with whether each is processed and
-- ready. A bounded index seek per aggregate (the correlated LIMIT).
SELECT h.id, e.id, e.processed,
       ((e.next_attempt_at IS NULL OR e.next_attempt_at <= strftime('%Y-%m-%d %H:%M:%f', 'now'))
        AND (e.locked_until IS NULL OR e.locked_until < strftime('%Y-%m-%d %H:%M:%f', 'now'))) AS ready
FROM events h
JOIN events e ON e.id IN (
    SELECT x.id FROM events x
    WHERE x.aggregate_id = h.aggregate_id
      AND (x.processed = 0 OR (?3 AND x.outcome = 'dead_lettered'))
    ORDER BY x.created_at, x.id
    LIMIT ?2)
WHERE h.id IN (SELECT value FROM json_each(?1))
ORDER BY h.id, e.created_at, e.id;

-- name: event_lock_available
-- Which of ?1 are available (writers are serialized: no row locks to skip).
SELECT id FROM events
WHERE id IN (SELECT value FROM json_each(?1)) AND processed = 0
  AND (next_attempt_at IS NULL OR next_attempt_at <= strftime('%Y-%m-%d %H:%M:%f', 'now'))
  AND (locked_until IS NULL OR locked_until < strftime('%Y-%m-%d %H:%M:%f', 'now'));

-- name: event_claim_followers
-- Lease the events ?1 to token ?2 for ?3 seconds.
UPDATE events
SET locked_by = ?2, locked_until = strftime('%Y-%m-%d %H:%M:%f', 'now', printf('%+.3f seconds', ?3)),
    attempts = attempts + 1
WHERE id IN (SELECT value FROM json_each(?1)) AND processed = 0
  AND (next_attempt_at IS NULL OR next_attempt_at <= strftime('%Y-%m-%d %H:%M:%f', 'now'))
  AND (locked_until IS NULL OR locked_until < strftime('%Y-%m-%d %H:%M:%f', 'now'))
RETURNING id, event_type, aggregate_id, aggregate_type, payload, metadata, processed, version,
          created_at, created_by, priority, attempts, next_attempt_at, locked_by,
          locked_until, processed_at, outcome;

-- name: dead_letter_discard
-- Mark the events of the dead letters ?1 discarded (if still dead-lettered),
-- then delete the dead letters: two statements, one transaction.
UPDATE events SET outcome = 'discarded'
WHERE id IN (SELECT event_id FROM event_dead_letters
             WHERE id IN (SELECT value FROM json_each(?1)))
  AND outcome = 'dead_lettered';
DELETE FROM event_dead_letters WHERE id IN (SELECT value FROM json_each(?1))
RETURNING event_id;

-- name: event_insert
-- Publish: one JSON array per column (?1 ids ... ?9 priorities; payloads
-- and metadata as JSON text), ids already present skipped.
INSERT INTO events (id, event_type, aggregate_id, aggregate_type, payload,
                    metadata, version, created_by, priority)
SELECT i.value, ?2 ->> i.key, ?3 ->> i.key, ?4 ->> i.key, ?5 ->> i.key,
       ?6 ->> i.key, ?7 ->> i.key, ?8 ->> i.key, ?9 ->> i.key
FROM json_each(?1) AS i WHERE true
ON CONFLICT (id) DO NOTHING
RETURNING id;
