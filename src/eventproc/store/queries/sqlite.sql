-- eventproc's lifecycle statements on SQLite (sqlite3: ?N parameters, the
-- same positions as postgresql.sql's $N, so that the store builds one
-- argument list for both). The same names are in postgresql.sql. Times are
-- UTC text in the form strftime('%Y-%m-%d %H:%M:%f') writes, so that they
-- compare as times. A list argument arrives as a JSON array; the columns of
-- a batch are zipped by position (`?2 ->> i.key`, the element of ?2 at i's
-- index). A named query may be several statements: the driver runs them in
-- one transaction, in order, and returns the rows of all of them.
--
-- An event moved onto deliveries is never claimable on its row: its
-- next_attempt_at is 9999-12-31 (see postgresql.sql).
--
-- Claims: ?1 token, ?2 lease seconds, ?3 limit, ?4 window (ordered claims
-- test only the first ?4 available events against the aggregate gate; the
-- unordered ones take it so that every claim has the same parameters).
-- Writers are serialized (BEGIN IMMEDIATE), so a claim needs no SKIP LOCKED.
-- A carrying claim first completes ?5 ids / ?6 tokens / ?7 outcomes for
-- worker ?8 (in order, for the ordered claims, ?9 their handlers) in the
-- same transaction: the claim then sees those events done.
--
-- The ordered claims return an 18th column, the handlers with an earlier
-- delivery of the event's aggregate pending (or dead-lettered, blocking), as
-- a JSON array text ('[]' for none): a correlated subquery in RETURNING.
--
-- Where PostgreSQL passes what one CTE wrote to the next, the statements
-- here mark the rows they wrote (locked_by '#written:<index in the batch>'
-- or '#opened:<token>', never a claim token), find them again by primary
-- key in the statements after, and clear the mark last, all in the one
-- transaction: nobody else ever sees a mark.

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
                                      'processed_by', ?8,
                                      'handled_by', c.handler,
                                      'skipped_reason', CASE WHEN c.outcome = 'skipped'
                                          THEN 'no subscription takes this event' END))
FROM (SELECT i.value AS id, ?6 ->> i.key AS token, ?7 ->> i.key AS outcome,
             ?9 ->> i.key AS handler
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
-- The gate: no earlier event of the same aggregate is still pending on its
-- own row (routed ones are gated per handler, by their deliveries).
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
            WHERE p.aggregate_id = e.aggregate_id AND p.processed = 0 AND p.routed_at IS NULL
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
          locked_until, processed_at, outcome,
          (SELECT json_group_array(DISTINCT d.handler) FROM event_deliveries d
           WHERE d.aggregate_id = events.aggregate_id AND d.status = 'pending'
             AND d.locked_by IS NOT ?1
             AND (d.event_created_at, d.event_id) < (events.created_at, events.id));

-- name: event_claim_ordered_carrying
-- The completions (in order, see event_write_back), then the claim.
UPDATE events
SET processed = 1, outcome = c.outcome, processed_at = strftime('%Y-%m-%d %H:%M:%f', 'now'),
    locked_by = NULL, locked_until = NULL, next_attempt_at = NULL,
    metadata = json_patch(coalesce(metadata, '{}'),
                          json_object('processed_at', strftime('%Y-%m-%d %H:%M:%f', 'now'),
                                      'processed_by', ?8,
                                      'handled_by', c.handler,
                                      'skipped_reason', CASE WHEN c.outcome = 'skipped'
                                          THEN 'no subscription takes this event' END))
FROM (SELECT i.value AS id, ?6 ->> i.key AS token, ?7 ->> i.key AS outcome,
             ?9 ->> i.key AS handler
      FROM json_each(?5) AS i) AS c
WHERE events.id = c.id AND events.locked_by = c.token
  AND (aggregate_id IS NULL OR (NOT EXISTS (
      SELECT 1 FROM events p
      WHERE p.aggregate_id = events.aggregate_id AND p.processed = 0 AND p.routed_at IS NULL
        AND (p.created_at, p.id) < (events.created_at, events.id)
        AND NOT EXISTS (
            SELECT 1 FROM json_each(?5) AS f
            WHERE f.value = p.id AND ?6 ->> f.key = p.locked_by))
    AND NOT EXISTS (
      SELECT 1 FROM event_deliveries d
      WHERE d.aggregate_id = events.aggregate_id AND d.handler = c.handler
        AND d.status = 'pending'
        AND (d.event_created_at, d.event_id) < (events.created_at, events.id))));
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
            WHERE p.aggregate_id = e.aggregate_id AND p.processed = 0 AND p.routed_at IS NULL
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
          locked_until, processed_at, outcome,
          (SELECT json_group_array(DISTINCT d.handler) FROM event_deliveries d
           WHERE d.aggregate_id = events.aggregate_id AND d.status = 'pending'
             AND d.locked_by IS NOT ?1
             AND (d.event_created_at, d.event_id) < (events.created_at, events.id));

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
                WHERE p.aggregate_id = e.aggregate_id AND p.processed = 0 AND p.routed_at IS NULL
                  AND (p.created_at, p.id) < (e.created_at, e.id))
            AND NOT EXISTS (
                SELECT 1 FROM events p
                WHERE p.aggregate_id = e.aggregate_id AND p.outcome = 'dead_lettered'
                  AND p.routed_at IS NULL
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
          locked_until, processed_at, outcome,
          (SELECT json_group_array(DISTINCT d.handler) FROM event_deliveries d
           WHERE d.aggregate_id = events.aggregate_id
             AND d.locked_by IS NOT ?1
             AND (d.status = 'pending' OR d.outcome = 'dead_lettered')
             AND (d.event_created_at, d.event_id) < (events.created_at, events.id));

-- name: event_claim_ordered_blocking_carrying
-- The completions (in order, see event_write_back), then the claim.
UPDATE events
SET processed = 1, outcome = c.outcome, processed_at = strftime('%Y-%m-%d %H:%M:%f', 'now'),
    locked_by = NULL, locked_until = NULL, next_attempt_at = NULL,
    metadata = json_patch(coalesce(metadata, '{}'),
                          json_object('processed_at', strftime('%Y-%m-%d %H:%M:%f', 'now'),
                                      'processed_by', ?8,
                                      'handled_by', c.handler,
                                      'skipped_reason', CASE WHEN c.outcome = 'skipped'
                                          THEN 'no subscription takes this event' END))
FROM (SELECT i.value AS id, ?6 ->> i.key AS token, ?7 ->> i.key AS outcome,
             ?9 ->> i.key AS handler
      FROM json_each(?5) AS i) AS c
WHERE events.id = c.id AND events.locked_by = c.token
  AND (aggregate_id IS NULL OR (NOT EXISTS (
      SELECT 1 FROM events p
      WHERE p.aggregate_id = events.aggregate_id AND p.processed = 0 AND p.routed_at IS NULL
        AND (p.created_at, p.id) < (events.created_at, events.id)
        AND NOT EXISTS (
            SELECT 1 FROM json_each(?5) AS f
            WHERE f.value = p.id AND ?6 ->> f.key = p.locked_by))
    AND NOT EXISTS (
      SELECT 1 FROM event_deliveries d
      WHERE d.aggregate_id = events.aggregate_id AND d.handler = c.handler
        AND d.status = 'pending'
        AND (d.event_created_at, d.event_id) < (events.created_at, events.id))));
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
                WHERE p.aggregate_id = e.aggregate_id AND p.processed = 0 AND p.routed_at IS NULL
                  AND (p.created_at, p.id) < (e.created_at, e.id))
            AND NOT EXISTS (
                SELECT 1 FROM events p
                WHERE p.aggregate_id = e.aggregate_id AND p.outcome = 'dead_lettered'
                  AND p.routed_at IS NULL
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
          locked_until, processed_at, outcome,
          (SELECT json_group_array(DISTINCT d.handler) FROM event_deliveries d
           WHERE d.aggregate_id = events.aggregate_id
             AND d.locked_by IS NOT ?1
             AND (d.status = 'pending' OR d.outcome = 'dead_lettered')
             AND (d.event_created_at, d.event_id) < (events.created_at, events.id));

-- name: event_write_back
-- Every kind of result of a batch, in one transaction (see postgresql.sql
-- for the parameters and what each kind means; ?19 the handler of each
-- success): the successes, the retries, the dead letters inserted, then
-- their events closed (the insert reads the fence before the close clears
-- it). Returns the id of every event written (a dead-lettered one twice).
UPDATE events
SET processed = 1, outcome = c.outcome, processed_at = strftime('%Y-%m-%d %H:%M:%f', 'now'),
    locked_by = NULL, locked_until = NULL, next_attempt_at = NULL,
    metadata = json_patch(coalesce(metadata, '{}'),
                          json_object('processed_at', strftime('%Y-%m-%d %H:%M:%f', 'now'),
                                      'processed_by', ?4,
                                      'handled_by', c.handler,
                                      'skipped_reason', CASE WHEN c.outcome = 'skipped'
                                          THEN 'no subscription takes this event' END))
FROM (SELECT i.value AS id, ?2 ->> i.key AS token, ?3 ->> i.key AS outcome,
             ?19 ->> i.key AS handler
      FROM json_each(?1) AS i) AS c
WHERE events.id = c.id AND events.locked_by = c.token
  AND (NOT ?5 OR aggregate_id IS NULL OR (NOT EXISTS (
      SELECT 1 FROM events p
      WHERE p.aggregate_id = events.aggregate_id AND p.processed = 0 AND p.routed_at IS NULL
        AND (p.created_at, p.id) < (events.created_at, events.id)
        AND NOT EXISTS (
            SELECT 1 FROM json_each(?1) AS f
            WHERE f.value = p.id AND ?2 ->> f.key = p.locked_by))
    AND NOT EXISTS (
      SELECT 1 FROM event_deliveries d
      WHERE d.aggregate_id = events.aggregate_id AND d.handler = c.handler
        AND d.status = 'pending'
        AND (d.event_created_at, d.event_id) < (events.created_at, events.id))))
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
WHERE id = ?1 AND processed = 0 AND routed_at IS NULL
  AND (locked_until IS NULL OR locked_until < strftime('%Y-%m-%d %H:%M:%f', 'now'))
RETURNING id, event_type, aggregate_id, aggregate_type, payload, metadata, processed, version,
          created_at, created_by, priority, attempts, next_attempt_at, locked_by,
          locked_until, processed_at, outcome;

-- name: event_claim_one_ordered
-- ... and not while an earlier event of its aggregate is pending.
UPDATE events
SET locked_by = ?2, locked_until = strftime('%Y-%m-%d %H:%M:%f', 'now', printf('%+.3f seconds', ?3)),
    attempts = attempts + 1, next_attempt_at = NULL
WHERE id = ?1 AND processed = 0 AND routed_at IS NULL
  AND (locked_until IS NULL OR locked_until < strftime('%Y-%m-%d %H:%M:%f', 'now'))
  AND (aggregate_id IS NULL OR NOT EXISTS (
        SELECT 1 FROM events p
        WHERE p.aggregate_id = events.aggregate_id AND p.processed = 0 AND p.routed_at IS NULL
          AND (p.created_at, p.id) < (events.created_at, events.id)))
RETURNING id, event_type, aggregate_id, aggregate_type, payload, metadata, processed, version,
          created_at, created_by, priority, attempts, next_attempt_at, locked_by,
          locked_until, processed_at, outcome,
          (SELECT json_group_array(DISTINCT d.handler) FROM event_deliveries d
           WHERE d.aggregate_id = events.aggregate_id AND d.status = 'pending'
             AND d.locked_by IS NOT ?2
             AND (d.event_created_at, d.event_id) < (events.created_at, events.id));

-- name: event_claim_one_ordered_blocking
-- ... nor behind a dead-lettered one (AGGREGATE_FAILURE=block).
UPDATE events
SET locked_by = ?2, locked_until = strftime('%Y-%m-%d %H:%M:%f', 'now', printf('%+.3f seconds', ?3)),
    attempts = attempts + 1, next_attempt_at = NULL
WHERE id = ?1 AND processed = 0 AND routed_at IS NULL
  AND (locked_until IS NULL OR locked_until < strftime('%Y-%m-%d %H:%M:%f', 'now'))
  AND (aggregate_id IS NULL OR (
        NOT EXISTS (
            SELECT 1 FROM events p
            WHERE p.aggregate_id = events.aggregate_id AND p.processed = 0
              AND p.routed_at IS NULL
              AND (p.created_at, p.id) < (events.created_at, events.id))
        AND NOT EXISTS (
            SELECT 1 FROM events p
            WHERE p.aggregate_id = events.aggregate_id AND p.outcome = 'dead_lettered'
              AND p.routed_at IS NULL
              AND (p.created_at, p.id) < (events.created_at, events.id))))
RETURNING id, event_type, aggregate_id, aggregate_type, payload, metadata, processed, version,
          created_at, created_by, priority, attempts, next_attempt_at, locked_by,
          locked_until, processed_at, outcome,
          (SELECT json_group_array(DISTINCT d.handler) FROM event_deliveries d
           WHERE d.aggregate_id = events.aggregate_id
             AND d.locked_by IS NOT ?2
             AND (d.status = 'pending' OR d.outcome = 'dead_lettered')
             AND (d.event_created_at, d.event_id) < (events.created_at, events.id));

-- name: event_revoke_stale_runs
-- Take back the rest of the runs behind heads just taken over (?1 their
-- aggregates): see postgresql.sql. Writers are serialized: nothing to skip.
UPDATE events SET locked_by = NULL, locked_until = NULL
WHERE aggregate_id IN (SELECT value FROM json_each(?1)) AND processed = 0
  AND locked_by IS NOT NULL AND locked_by <> ?2
RETURNING id;

-- name: event_runs_behind
-- For each head ?1: the first ?2 events of its aggregate still on their own
-- rows that are pending (or, with ?3, dead-lettered), in order, with whether
-- each is processed and ready (due, not leased). Routed events are passed
-- over, as the claim's gate passes them: their deliveries gate them per
-- handler. Two bounded index seeks per aggregate (the correlated LIMITs;
-- an OR of the two scans the table).
SELECT h.id, e.id, e.processed,
       ((e.next_attempt_at IS NULL OR e.next_attempt_at <= strftime('%Y-%m-%d %H:%M:%f', 'now'))
        AND (e.locked_until IS NULL OR e.locked_until < strftime('%Y-%m-%d %H:%M:%f', 'now')))
        AS ready
FROM events h
JOIN events e ON e.id IN (
    SELECT u.id FROM (
        SELECT * FROM (
            SELECT x.id, x.created_at FROM events x
            WHERE x.aggregate_id = h.aggregate_id AND x.processed = 0 AND x.routed_at IS NULL
            ORDER BY x.created_at, x.id
            LIMIT ?2)
        UNION ALL
        SELECT * FROM (
            SELECT y.id, y.created_at FROM events y
            WHERE ?3 AND y.aggregate_id = h.aggregate_id AND y.outcome = 'dead_lettered'
              AND y.routed_at IS NULL
            ORDER BY y.created_at, y.id
            LIMIT ?2)) u
    ORDER BY u.created_at, u.id
    LIMIT ?2)
WHERE h.id IN (SELECT value FROM json_each(?1))
ORDER BY h.id, e.created_at, e.id;

-- name: event_lock_available
-- Which of ?1 are available (writers are serialized: no row locks to skip).
SELECT id FROM events
WHERE id IN (SELECT value FROM json_each(?1)) AND processed = 0 AND routed_at IS NULL
  AND (next_attempt_at IS NULL OR next_attempt_at <= strftime('%Y-%m-%d %H:%M:%f', 'now'))
  AND (locked_until IS NULL OR locked_until < strftime('%Y-%m-%d %H:%M:%f', 'now'));

-- name: event_claim_followers
-- Lease the events ?1 to token ?2 for ?3 seconds; each with the handlers
-- whose earlier deliveries in its aggregate are pending (or, with ?4,
-- dead-lettered): those must not run it yet. (The test is spelled in two
-- terms so that SQLite sees it may use event_deliveries_aggregate_idx.)
UPDATE events
SET locked_by = ?2, locked_until = strftime('%Y-%m-%d %H:%M:%f', 'now', printf('%+.3f seconds', ?3)),
    attempts = attempts + 1
WHERE id IN (SELECT value FROM json_each(?1)) AND processed = 0 AND routed_at IS NULL
  AND (next_attempt_at IS NULL OR next_attempt_at <= strftime('%Y-%m-%d %H:%M:%f', 'now'))
  AND (locked_until IS NULL OR locked_until < strftime('%Y-%m-%d %H:%M:%f', 'now'))
RETURNING id, event_type, aggregate_id, aggregate_type, payload, metadata, processed, version,
          created_at, created_by, priority, attempts, next_attempt_at, locked_by,
          locked_until, processed_at, outcome,
          (SELECT json_group_array(DISTINCT d.handler) FROM event_deliveries d
           WHERE d.aggregate_id = events.aggregate_id
             AND d.locked_by IS NOT ?2
             AND (d.status = 'pending' OR d.outcome = 'dead_lettered')
             AND (d.status = 'pending' OR ?4)
             AND (d.event_created_at, d.event_id) < (events.created_at, events.id));

-- name: dead_letter_discard
-- Mark the deliveries and the events of the dead letters ?1 discarded (if
-- still dead-lettered), then delete the dead letters: one transaction.
UPDATE event_deliveries SET outcome = 'discarded'
WHERE (event_id, handler) IN (SELECT event_id, handler FROM event_dead_letters
                              WHERE id IN (SELECT value FROM json_each(?1)))
  AND outcome = 'dead_lettered';
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

-- Deliveries: the work of one subscription on one event, in event_deliveries
-- (see postgresql.sql). A delivery claim returns the event's columns with
-- the delivery's attempts, next_attempt_at, locked_by and locked_until in
-- their places, then the handler (the 18th column).

-- name: delivery_open
-- Move events onto deliveries: ?1 event ids, ?2 their claim tokens (the
-- event's lease is the fence, and is cleared), ?3 handlers, ?4 run now
-- (leased with the event's token for ?6 seconds, its attempt counted) or
-- wait, ?5 attempts spent on the event's row before this one, ?7 give this
-- claim's attempt on the row back (see postgresql.sql). The deliveries opened
-- leased carry the mark '#opened:<token>' until the last statement: the
-- rows returned are those opened here, not ones that were already there.
INSERT INTO event_deliveries (event_id, handler, event_type, aggregate_id, event_created_at,
                              priority, attempts, locked_by, locked_until)
SELECT e.id, p.handler, e.event_type, e.aggregate_id,
       coalesce(e.created_at, strftime('%Y-%m-%d %H:%M:%f', 'now')), e.priority,
       p.spent + CASE WHEN p.leased THEN 1 ELSE 0 END,
       CASE WHEN p.leased THEN '#opened:' || p.token END,
       CASE WHEN p.leased
            THEN strftime('%Y-%m-%d %H:%M:%f', 'now', printf('%+.3f seconds', ?6)) END
FROM (SELECT i.value AS id, ?2 ->> i.key AS token, ?3 ->> i.key AS handler,
             ?4 ->> i.key AS leased, ?5 ->> i.key AS spent
      FROM json_each(?1) AS i) AS p
JOIN events e ON e.id = p.id AND e.locked_by = p.token
WHERE e.processed = 0
ON CONFLICT (event_id, handler) DO NOTHING;
UPDATE events
SET routed_at = strftime('%Y-%m-%d %H:%M:%f', 'now'), locked_by = NULL, locked_until = NULL,
    next_attempt_at = '9999-12-31 00:00:00.000',
    deliveries_open = coalesce(events.deliveries_open, 0) + n.plans,
    attempts = events.attempts - n.given_back
FROM (SELECT i.value AS id, ?2 ->> i.key AS token, count(*) AS plans,
             max(?7 ->> i.key) AS given_back
      FROM json_each(?1) AS i GROUP BY 1, 2) AS n
WHERE events.id = n.id AND events.locked_by = n.token AND events.processed = 0;
SELECT e.id, e.event_type, e.aggregate_id, e.aggregate_type, e.payload, e.metadata,
       e.processed, e.version, e.created_at, e.created_by, e.priority,
       d.attempts, NULL, p.token, d.locked_until, e.processed_at, e.outcome, d.handler
FROM (SELECT i.value AS id, ?2 ->> i.key AS token, ?3 ->> i.key AS handler
      FROM json_each(?1) AS i) AS p
JOIN event_deliveries d
  ON d.event_id = p.id AND d.handler = p.handler AND d.locked_by = '#opened:' || p.token
JOIN events e ON e.id = d.event_id;
UPDATE event_deliveries SET locked_by = p.token
FROM (SELECT i.value AS id, ?2 ->> i.key AS token, ?3 ->> i.key AS handler
      FROM json_each(?1) AS i) AS p
WHERE event_deliveries.event_id = p.id AND event_deliveries.handler = p.handler
  AND event_deliveries.locked_by = '#opened:' || p.token;

-- name: delivery_claim
-- Claims of deliveries: ?1 token, ?2 lease seconds, ?3 limit, ?4 window, as
-- the event claims; none takes a paused subscription's deliveries (see
-- postgresql.sql). RETURNING may name only the updated table here, so the
-- event's columns are read with one primary-key lookup each; a delivery
-- whose event is gone is not claimed (PostgreSQL's join would not return it).
WITH picked AS (
    SELECT d.event_id, d.handler FROM event_deliveries d
    JOIN events e ON e.id = d.event_id
    WHERE d.status = 'pending'
      AND (d.next_attempt_at IS NULL OR d.next_attempt_at <= strftime('%Y-%m-%d %H:%M:%f', 'now'))
      AND (d.locked_until IS NULL OR d.locked_until < strftime('%Y-%m-%d %H:%M:%f', 'now'))
      AND d.handler NOT IN (SELECT handler FROM handler_pauses)
      AND ?4 > 0
    ORDER BY d.priority DESC, d.event_created_at, d.event_id
    LIMIT ?3
)
UPDATE event_deliveries
SET locked_by = ?1, locked_until = strftime('%Y-%m-%d %H:%M:%f', 'now', printf('%+.3f seconds', ?2)),
    attempts = event_deliveries.attempts + 1
FROM picked
WHERE event_deliveries.event_id = picked.event_id AND event_deliveries.handler = picked.handler
RETURNING event_id,
          (SELECT e.event_type FROM events e WHERE e.id = event_deliveries.event_id),
          (SELECT e.aggregate_id FROM events e WHERE e.id = event_deliveries.event_id),
          (SELECT e.aggregate_type FROM events e WHERE e.id = event_deliveries.event_id),
          (SELECT e.payload FROM events e WHERE e.id = event_deliveries.event_id),
          (SELECT e.metadata FROM events e WHERE e.id = event_deliveries.event_id),
          (SELECT e.processed FROM events e WHERE e.id = event_deliveries.event_id),
          (SELECT e.version FROM events e WHERE e.id = event_deliveries.event_id),
          (SELECT e.created_at FROM events e WHERE e.id = event_deliveries.event_id),
          (SELECT e.created_by FROM events e WHERE e.id = event_deliveries.event_id),
          (SELECT e.priority FROM events e WHERE e.id = event_deliveries.event_id),
          attempts, next_attempt_at, locked_by, locked_until,
          (SELECT e.processed_at FROM events e WHERE e.id = event_deliveries.event_id),
          (SELECT e.outcome FROM events e WHERE e.id = event_deliveries.event_id),
          handler;

-- name: delivery_claim_ordered
-- The gate, per (handler, aggregate): no earlier delivery of the same
-- handler in the aggregate is pending, and no earlier event of the
-- aggregate is still unrouted (it may be this handler's too).
WITH picked AS (
    SELECT d.event_id, d.handler FROM event_deliveries d
    JOIN events e ON e.id = d.event_id
    WHERE (d.event_id, d.handler) IN (
            SELECT w.event_id, w.handler FROM event_deliveries w
            WHERE w.status = 'pending'
              AND (w.next_attempt_at IS NULL
                   OR w.next_attempt_at <= strftime('%Y-%m-%d %H:%M:%f', 'now'))
              AND (w.locked_until IS NULL
                   OR w.locked_until < strftime('%Y-%m-%d %H:%M:%f', 'now'))
              AND w.handler NOT IN (SELECT handler FROM handler_pauses)
            ORDER BY w.priority DESC, w.event_created_at, w.event_id
            LIMIT ?4)
      AND d.status = 'pending'
      AND (d.next_attempt_at IS NULL OR d.next_attempt_at <= strftime('%Y-%m-%d %H:%M:%f', 'now'))
      AND (d.locked_until IS NULL OR d.locked_until < strftime('%Y-%m-%d %H:%M:%f', 'now'))
      AND (d.aggregate_id IS NULL OR (
            NOT EXISTS (
                SELECT 1 FROM event_deliveries q
                WHERE q.aggregate_id = d.aggregate_id AND q.handler = d.handler
                  AND q.status = 'pending'
                  AND (q.event_created_at, q.event_id) < (d.event_created_at, d.event_id))
            AND NOT EXISTS (
                SELECT 1 FROM events p
                WHERE p.aggregate_id = d.aggregate_id AND p.processed = 0
                  AND p.routed_at IS NULL
                  AND (p.created_at, p.id) < (d.event_created_at, d.event_id))))
    ORDER BY d.priority DESC, d.event_created_at, d.event_id
    LIMIT ?3
)
UPDATE event_deliveries
SET locked_by = ?1, locked_until = strftime('%Y-%m-%d %H:%M:%f', 'now', printf('%+.3f seconds', ?2)),
    attempts = event_deliveries.attempts + 1
FROM picked
WHERE event_deliveries.event_id = picked.event_id AND event_deliveries.handler = picked.handler
RETURNING event_id,
          (SELECT e.event_type FROM events e WHERE e.id = event_deliveries.event_id),
          (SELECT e.aggregate_id FROM events e WHERE e.id = event_deliveries.event_id),
          (SELECT e.aggregate_type FROM events e WHERE e.id = event_deliveries.event_id),
          (SELECT e.payload FROM events e WHERE e.id = event_deliveries.event_id),
          (SELECT e.metadata FROM events e WHERE e.id = event_deliveries.event_id),
          (SELECT e.processed FROM events e WHERE e.id = event_deliveries.event_id),
          (SELECT e.version FROM events e WHERE e.id = event_deliveries.event_id),
          (SELECT e.created_at FROM events e WHERE e.id = event_deliveries.event_id),
          (SELECT e.created_by FROM events e WHERE e.id = event_deliveries.event_id),
          (SELECT e.priority FROM events e WHERE e.id = event_deliveries.event_id),
          attempts, next_attempt_at, locked_by, locked_until,
          (SELECT e.processed_at FROM events e WHERE e.id = event_deliveries.event_id),
          (SELECT e.outcome FROM events e WHERE e.id = event_deliveries.event_id),
          handler;

-- name: delivery_claim_ordered_blocking
-- AGGREGATE_FAILURE=block: an earlier dead-lettered delivery of the same
-- handler (or an earlier event dead-lettered on its own row) holds back too.
WITH picked AS (
    SELECT d.event_id, d.handler FROM event_deliveries d
    JOIN events e ON e.id = d.event_id
    WHERE (d.event_id, d.handler) IN (
            SELECT w.event_id, w.handler FROM event_deliveries w
            WHERE w.status = 'pending'
              AND (w.next_attempt_at IS NULL
                   OR w.next_attempt_at <= strftime('%Y-%m-%d %H:%M:%f', 'now'))
              AND (w.locked_until IS NULL
                   OR w.locked_until < strftime('%Y-%m-%d %H:%M:%f', 'now'))
              AND w.handler NOT IN (SELECT handler FROM handler_pauses)
            ORDER BY w.priority DESC, w.event_created_at, w.event_id
            LIMIT ?4)
      AND d.status = 'pending'
      AND (d.next_attempt_at IS NULL OR d.next_attempt_at <= strftime('%Y-%m-%d %H:%M:%f', 'now'))
      AND (d.locked_until IS NULL OR d.locked_until < strftime('%Y-%m-%d %H:%M:%f', 'now'))
      AND (d.aggregate_id IS NULL OR (
            NOT EXISTS (
                SELECT 1 FROM event_deliveries q
                WHERE q.aggregate_id = d.aggregate_id AND q.handler = d.handler
                  AND (q.status = 'pending' OR q.outcome = 'dead_lettered')
                  AND (q.event_created_at, q.event_id) < (d.event_created_at, d.event_id))
            AND NOT EXISTS (
                SELECT 1 FROM events p
                WHERE p.aggregate_id = d.aggregate_id AND p.processed = 0
                  AND p.routed_at IS NULL
                  AND (p.created_at, p.id) < (d.event_created_at, d.event_id))
            AND NOT EXISTS (
                SELECT 1 FROM events p
                WHERE p.aggregate_id = d.aggregate_id AND p.outcome = 'dead_lettered'
                  AND p.routed_at IS NULL
                  AND (p.created_at, p.id) < (d.event_created_at, d.event_id))))
    ORDER BY d.priority DESC, d.event_created_at, d.event_id
    LIMIT ?3
)
UPDATE event_deliveries
SET locked_by = ?1, locked_until = strftime('%Y-%m-%d %H:%M:%f', 'now', printf('%+.3f seconds', ?2)),
    attempts = event_deliveries.attempts + 1
FROM picked
WHERE event_deliveries.event_id = picked.event_id AND event_deliveries.handler = picked.handler
RETURNING event_id,
          (SELECT e.event_type FROM events e WHERE e.id = event_deliveries.event_id),
          (SELECT e.aggregate_id FROM events e WHERE e.id = event_deliveries.event_id),
          (SELECT e.aggregate_type FROM events e WHERE e.id = event_deliveries.event_id),
          (SELECT e.payload FROM events e WHERE e.id = event_deliveries.event_id),
          (SELECT e.metadata FROM events e WHERE e.id = event_deliveries.event_id),
          (SELECT e.processed FROM events e WHERE e.id = event_deliveries.event_id),
          (SELECT e.version FROM events e WHERE e.id = event_deliveries.event_id),
          (SELECT e.created_at FROM events e WHERE e.id = event_deliveries.event_id),
          (SELECT e.created_by FROM events e WHERE e.id = event_deliveries.event_id),
          (SELECT e.priority FROM events e WHERE e.id = event_deliveries.event_id),
          attempts, next_attempt_at, locked_by, locked_until,
          (SELECT e.processed_at FROM events e WHERE e.id = event_deliveries.event_id),
          (SELECT e.outcome FROM events e WHERE e.id = event_deliveries.event_id),
          handler;

-- name: delivery_write_back
-- The results of deliveries, fenced on (event, handler, token); the
-- parameters and the in-order test as in postgresql.sql (?1 event ids, ?2
-- handlers, ?3 tokens, ?4 kinds, ?5 delays, ?6 errors, ?7 attempts, ?8
-- tracebacks, ?9 fingerprints, ?10 worker, ?11 in order, ?12 / ?13 the
-- batch's successes on events' own rows). Four statements: the deliveries
-- written, each marked '#written:<its index in ?1>'; their events (counts,
-- outcome so far, last failure, attempts the most of its deliveries',
-- processed when none is left open); the
-- dead letters; the marks cleared, returning (event_id, handler) of each
-- delivery written. The in-order test sees every row as it was before the
-- statement (SQLite reads the rows to update first, then writes them), as
-- PostgreSQL's snapshot does.
UPDATE event_deliveries
SET locked_by = '#written:' || r.k, locked_until = NULL,
    status = CASE WHEN r.kind IN ('succeeded', 'dead_lettered') THEN 'done' ELSE 'pending' END,
    outcome = CASE WHEN r.kind IN ('succeeded', 'dead_lettered') THEN r.kind END,
    finished_at = CASE WHEN r.kind IN ('succeeded', 'dead_lettered')
                       THEN strftime('%Y-%m-%d %H:%M:%f', 'now') END,
    next_attempt_at = CASE WHEN r.kind IN ('retry', 'rescheduled')
        THEN strftime('%Y-%m-%d %H:%M:%f', 'now', printf('%+.3f seconds', r.delay)) END,
    attempts = CASE WHEN r.kind = 'rescheduled' THEN event_deliveries.attempts - 1
                    ELSE event_deliveries.attempts END,
    last_error = CASE WHEN r.kind IN ('retry', 'dead_lettered') THEN substr(r.error, 1, 2000)
                      ELSE event_deliveries.last_error END
FROM (SELECT i.key AS k, i.value AS id, ?2 ->> i.key AS handler, ?3 ->> i.key AS token,
             ?4 ->> i.key AS kind, ?5 ->> i.key AS delay, ?6 ->> i.key AS error
      FROM json_each(?1) AS i) AS r
WHERE event_deliveries.event_id = r.id AND event_deliveries.handler = r.handler
  AND event_deliveries.locked_by = r.token AND event_deliveries.status = 'pending'
  AND (NOT ?11 OR r.kind <> 'succeeded' OR event_deliveries.aggregate_id IS NULL OR (
        NOT EXISTS (
            SELECT 1 FROM event_deliveries q
            WHERE q.aggregate_id = event_deliveries.aggregate_id
              AND q.handler = event_deliveries.handler
              AND q.status = 'pending'
              AND (q.event_created_at, q.event_id)
                  < (event_deliveries.event_created_at, event_deliveries.event_id)
              AND NOT EXISTS (
                  SELECT 1 FROM json_each(?1) AS f
                  WHERE f.value = q.event_id AND ?2 ->> f.key = q.handler
                    AND ?4 ->> f.key = 'succeeded'
                    AND ?3 ->> f.key = q.locked_by))
        AND NOT EXISTS (
            SELECT 1 FROM events p
            WHERE p.aggregate_id = event_deliveries.aggregate_id AND p.processed = 0
              AND p.routed_at IS NULL
              AND (p.created_at, p.id)
                  < (event_deliveries.event_created_at, event_deliveries.event_id)
              AND NOT EXISTS (
                  SELECT 1 FROM json_each(?12) AS f
                  WHERE f.value = p.id AND ?13 ->> f.key = p.locked_by))));
UPDATE events
SET deliveries_open = max(coalesce(events.deliveries_open - t.finished, 0), 0),
    attempts = max(events.attempts, t.spent),
    processed = coalesce(events.deliveries_open - t.finished <= 0, 0),
    processed_at = CASE WHEN events.deliveries_open - t.finished <= 0
                        THEN strftime('%Y-%m-%d %H:%M:%f', 'now') END,
    outcome = CASE WHEN t.outcome IS NULL THEN events.outcome
                   WHEN events.outcome IS NULL OR events.outcome = t.outcome THEN t.outcome
                   ELSE 'partial' END,
    metadata = json_patch(json_patch(json_patch(
        coalesce(events.metadata, '{}'),
        CASE WHEN t.failed IS NULL THEN '{}'
             ELSE json_object('retry_count', ?7 ->> t.failed,
                              'last_error', substr(?6 ->> t.failed, 1, 2000),
                              'last_error_handler', ?2 ->> t.failed,
                              'last_error_at', strftime('%Y-%m-%d %H:%M:%f', 'now')) END),
        CASE WHEN t.dead THEN json_object('dead_lettered', json('true')) ELSE '{}' END),
        CASE WHEN events.deliveries_open - t.finished <= 0
             THEN json_object('processed_at', strftime('%Y-%m-%d %H:%M:%f', 'now'),
                              'processed_by', ?10)
             ELSE '{}' END)
FROM (SELECT d.event_id, max(d.attempts) AS spent,
             sum(r.kind IN ('succeeded', 'dead_lettered')) AS finished,
             CASE WHEN max(r.kind = 'succeeded') AND max(r.kind = 'dead_lettered') THEN 'partial'
                  WHEN max(r.kind = 'dead_lettered') THEN 'dead_lettered'
                  WHEN max(r.kind = 'succeeded') THEN 'succeeded' END AS outcome,
             min(CASE WHEN r.kind IN ('retry', 'dead_lettered') THEN r.k END) AS failed,
             max(r.kind = 'dead_lettered') AS dead
      FROM (SELECT i.key AS k, i.value AS id, ?2 ->> i.key AS handler, ?4 ->> i.key AS kind
            FROM json_each(?1) AS i) AS r
      JOIN event_deliveries d
        ON d.event_id = r.id AND d.handler = r.handler AND d.locked_by = '#written:' || r.k
      GROUP BY d.event_id) AS t
WHERE events.id = t.event_id;
INSERT INTO event_dead_letters (id, event_id, event_type, payload, error_message, retry_count,
                                original_created_at, created_at, error_detail, handler,
                                error_fingerprint)
SELECT lower(hex(randomblob(4)) || '-' || hex(randomblob(2)) || '-4'
             || substr(hex(randomblob(2)), 2) || '-'
             || substr('89ab', 1 + (abs(random()) % 4), 1)
             || substr(hex(randomblob(2)), 2) || '-' || hex(randomblob(6))),
       e.id, e.event_type, e.payload, ?6 ->> r.k, ?7 ->> r.k,
       coalesce(e.created_at, strftime('%Y-%m-%d %H:%M:%f', 'now')),
       strftime('%Y-%m-%d %H:%M:%f', 'now'), ?8 ->> r.k, r.handler, ?9 ->> r.k
FROM (SELECT i.key AS k, i.value AS id, ?2 ->> i.key AS handler, ?4 ->> i.key AS kind
      FROM json_each(?1) AS i) AS r
JOIN event_deliveries d
  ON d.event_id = r.id AND d.handler = r.handler AND d.locked_by = '#written:' || r.k
JOIN events e ON e.id = d.event_id
WHERE r.kind = 'dead_lettered';
UPDATE event_deliveries SET locked_by = NULL
FROM (SELECT i.key AS k, i.value AS id, ?2 ->> i.key AS handler FROM json_each(?1) AS i) AS r
WHERE event_deliveries.event_id = r.id AND event_deliveries.handler = r.handler
  AND event_deliveries.locked_by = '#written:' || r.k
RETURNING event_id, handler;

-- name: delivery_hold
-- A transactional handler's first statement on a delivery (?1 event, ?2
-- handler, ?3 token): the lease is still ours.
UPDATE event_deliveries SET locked_until = locked_until
WHERE event_id = ?1 AND handler = ?2 AND locked_by = ?3
RETURNING event_id;

-- name: delivery_release
-- Give delivery leases back unfinished (?1 event ids, ?2 handlers, ?3
-- tokens): the attempt is not spent.
UPDATE event_deliveries
SET locked_by = NULL, locked_until = NULL, attempts = event_deliveries.attempts - 1
FROM (SELECT i.value AS id, ?2 ->> i.key AS handler, ?3 ->> i.key AS token
      FROM json_each(?1) AS i) AS l
WHERE event_deliveries.event_id = l.id AND event_deliveries.handler = l.handler
  AND event_deliveries.locked_by = l.token
RETURNING event_id;

-- name: delivery_renew
-- Extend the delivery leases ?1 / ?2 / ?3 by ?4 seconds from now.
UPDATE event_deliveries
SET locked_until = strftime('%Y-%m-%d %H:%M:%f', 'now', printf('%+.3f seconds', ?4))
FROM (SELECT i.value AS id, ?2 ->> i.key AS handler, ?3 ->> i.key AS token
      FROM json_each(?1) AS i) AS l
WHERE event_deliveries.event_id = l.id AND event_deliveries.handler = l.handler
  AND event_deliveries.locked_by = l.token
RETURNING event_id, handler;

-- name: delivery_replay
-- Run one subscription ?2 of event ?1 again (see postgresql.sql): only for
-- an event routed or processed, and not while that delivery is pending. Its
-- open dead letters are closed, the event made pending (its outcome so far
-- that of its other finished deliveries), then the delivery reopened or
-- created. routed_at is set anew, always to a later time than it had (the
-- clock has milliseconds), which tells the replay trigger to leave the
-- event's other deliveries alone.
UPDATE event_dead_letters SET replayed_at = strftime('%Y-%m-%d %H:%M:%f', 'now')
WHERE event_id = ?1 AND handler = ?2 AND replayed_at IS NULL
  AND EXISTS (SELECT 1 FROM events e
              WHERE e.id = ?1 AND (e.processed = 1 OR e.routed_at IS NOT NULL))
  AND NOT EXISTS (SELECT 1 FROM event_deliveries d
                  WHERE d.event_id = ?1 AND d.handler = ?2 AND d.status <> 'done');
UPDATE events
SET processed = 0, processed_at = NULL,
    routed_at = CASE WHEN routed_at >= strftime('%Y-%m-%d %H:%M:%f', 'now')
                     THEN strftime('%Y-%m-%d %H:%M:%f', routed_at, '+0.001 seconds')
                     ELSE strftime('%Y-%m-%d %H:%M:%f', 'now') END,
    next_attempt_at = '9999-12-31 00:00:00.000', deliveries_open = coalesce(deliveries_open, 0) + 1,
    outcome = (SELECT CASE WHEN count(DISTINCT o.outcome) > 1 THEN 'partial'
                           ELSE min(o.outcome) END
               FROM event_deliveries o
               WHERE o.event_id = ?1 AND o.handler <> ?2 AND o.status = 'done'),
    metadata = json_patch(coalesce(metadata, '{}'),
                          json_object('replayed', json('true'),
                                      'replayed_at', strftime('%Y-%m-%d %H:%M:%f', 'now'),
                                      'replayed_handler', ?2))
WHERE id = ?1 AND (processed = 1 OR routed_at IS NOT NULL)
  AND NOT EXISTS (SELECT 1 FROM event_deliveries d
                  WHERE d.event_id = ?1 AND d.handler = ?2 AND d.status <> 'done')
RETURNING id;
INSERT INTO event_deliveries (event_id, handler, event_type, aggregate_id, event_created_at,
                              priority)
SELECT e.id, ?2, e.event_type, e.aggregate_id,
       coalesce(e.created_at, strftime('%Y-%m-%d %H:%M:%f', 'now')), e.priority
FROM events e
WHERE e.id = ?1 AND (e.processed = 1 OR e.routed_at IS NOT NULL)
ON CONFLICT (event_id, handler) DO UPDATE
SET status = 'pending', outcome = NULL, attempts = 0, next_attempt_at = NULL,
    locked_by = NULL, locked_until = NULL, finished_at = NULL, last_error = NULL
WHERE event_deliveries.status = 'done';

-- name: delivery_add
-- A backfill: give each of the events ?1 (routed or processed) a delivery
-- for handler ?2 where it has none: those events first made pending again
-- (routed_at set anew, as in delivery_replay), then their deliveries
-- inserted. Returns the events given one.
UPDATE events
SET processed = 0, processed_at = NULL,
    routed_at = CASE WHEN routed_at >= strftime('%Y-%m-%d %H:%M:%f', 'now')
                     THEN strftime('%Y-%m-%d %H:%M:%f', routed_at, '+0.001 seconds')
                     ELSE strftime('%Y-%m-%d %H:%M:%f', 'now') END,
    next_attempt_at = '9999-12-31 00:00:00.000', deliveries_open = coalesce(deliveries_open, 0) + 1
WHERE id IN (SELECT value FROM json_each(?1)) AND (processed = 1 OR routed_at IS NOT NULL)
  AND NOT EXISTS (SELECT 1 FROM event_deliveries d
                  WHERE d.event_id = events.id AND d.handler = ?2)
RETURNING id;
INSERT INTO event_deliveries (event_id, handler, event_type, aggregate_id, event_created_at,
                              priority)
SELECT e.id, ?2, e.event_type, e.aggregate_id,
       coalesce(e.created_at, strftime('%Y-%m-%d %H:%M:%f', 'now')), e.priority
FROM events e
WHERE e.id IN (SELECT value FROM json_each(?1)) AND (e.processed = 1 OR e.routed_at IS NOT NULL)
ON CONFLICT (event_id, handler) DO NOTHING;

-- name: delivery_claim_followers
-- The deliveries right behind each claimed head (?1 event ids, ?2 handlers),
-- up to ?3 per head, leased to ?4 for ?5 seconds (see postgresql.sql): each
-- head's candidates are one bounded seek of event_deliveries_aggregate_idx
-- (the correlated LIMIT), and the event's columns come back by primary-key
-- lookups, as delivery_claim's do.
UPDATE event_deliveries
SET locked_by = ?4,
    locked_until = strftime('%Y-%m-%d %H:%M:%f', 'now', printf('%+.3f seconds', ?5)),
    attempts = attempts + 1
WHERE (event_id, handler) IN (
    SELECT event_id, handler FROM (
        SELECT q.event_id, q.handler,
               count(*) FILTER (WHERE NOT (
                   (q.next_attempt_at IS NULL
                    OR q.next_attempt_at <= strftime('%Y-%m-%d %H:%M:%f', 'now'))
                   AND (q.locked_until IS NULL
                        OR q.locked_until < strftime('%Y-%m-%d %H:%M:%f', 'now')))) OVER w
                   AS stops
        FROM (SELECT i.value AS id, ?2 ->> i.key AS handler FROM json_each(?1) AS i) AS hh
        JOIN event_deliveries h
          ON h.event_id = hh.id AND h.handler = hh.handler AND h.aggregate_id IS NOT NULL
         AND h.handler NOT IN (SELECT handler FROM handler_pauses)
        JOIN event_deliveries q
          ON q.handler = h.handler AND q.event_id IN (
              SELECT x.event_id FROM event_deliveries x
              WHERE x.aggregate_id = h.aggregate_id AND x.handler = h.handler
                AND x.status = 'pending'
                AND (x.event_created_at, x.event_id) > (h.event_created_at, h.event_id)
                AND NOT EXISTS (
                    SELECT 1 FROM events p
                    WHERE p.aggregate_id = h.aggregate_id AND p.processed = 0
                      AND p.routed_at IS NULL
                      AND (p.created_at, p.id) < (x.event_created_at, x.event_id))
              ORDER BY x.event_created_at, x.event_id
              LIMIT ?3)
        WINDOW w AS (PARTITION BY h.event_id, h.handler
                     ORDER BY q.event_created_at, q.event_id))
    WHERE stops = 0)
RETURNING event_id,
          (SELECT e.event_type FROM events e WHERE e.id = event_deliveries.event_id),
          (SELECT e.aggregate_id FROM events e WHERE e.id = event_deliveries.event_id),
          (SELECT e.aggregate_type FROM events e WHERE e.id = event_deliveries.event_id),
          (SELECT e.payload FROM events e WHERE e.id = event_deliveries.event_id),
          (SELECT e.metadata FROM events e WHERE e.id = event_deliveries.event_id),
          (SELECT e.processed FROM events e WHERE e.id = event_deliveries.event_id),
          (SELECT e.version FROM events e WHERE e.id = event_deliveries.event_id),
          (SELECT e.created_at FROM events e WHERE e.id = event_deliveries.event_id),
          (SELECT e.created_by FROM events e WHERE e.id = event_deliveries.event_id),
          (SELECT e.priority FROM events e WHERE e.id = event_deliveries.event_id),
          attempts, next_attempt_at, locked_by, locked_until,
          (SELECT e.processed_at FROM events e WHERE e.id = event_deliveries.event_id),
          (SELECT e.outcome FROM events e WHERE e.id = event_deliveries.event_id),
          handler;

-- name: delivery_revoke_stale_runs
-- The rest of the runs behind delivery heads just taken over (?1 their
-- aggregates, ?2 their handlers), leased to another token than ?3, taken
-- back (see postgresql.sql).
UPDATE event_deliveries SET locked_by = NULL, locked_until = NULL
WHERE status = 'pending' AND locked_by IS NOT NULL AND locked_by <> ?3
  AND EXISTS (
      SELECT 1 FROM json_each(?1) AS i
      WHERE i.value = event_deliveries.aggregate_id
        AND ?2 ->> i.key = event_deliveries.handler)
RETURNING event_id;

-- Admin reads
-- ==========================================================================
-- The admin API's (and /health's) fixed-shape reads, run by Driver.read on
-- the reader's pool (see postgresql.sql). Times, uuids and JSON come back
-- as the text the columns hold. The database's clock is read once per
-- statement, in a MATERIALIZED CTE: 'now' is only stable within one step.

-- name: admin_audit_page
-- The audit trail newest first, ?5 entries before the keyset (?3 at, ?4
-- id), of action ?1 and actor ?2 when given: admin_actions_at_idx.
SELECT id, at, actor, role, action, target, reason, counts, result, operation_id
FROM admin_actions
WHERE (?1 IS NULL OR action = ?1)
  AND (?2 IS NULL OR actor = ?2)
  AND (at, id) < (?3, ?4)
ORDER BY at DESC, id DESC
LIMIT ?5;

-- name: admin_operations_page
-- Bulk operations newest first, ?5 of them before the keyset (?3
-- created_at, ?4 id), of status ?1 and action ?2 when given:
-- admin_operations_created_idx. The columns of store.admin.Operation.
SELECT id, action, selector, max_items, rate_per_second, status, planned_count, total,
       done_count, changed_count, actor, role, reason, created_at, started_at, finished_at,
       updated_at, plan_expires_at, locked_by, locked_until, "cursor", error
FROM admin_operations
WHERE (?1 IS NULL OR status = ?1)
  AND (?2 IS NULL OR action = ?2)
  AND (created_at, id) < (?3, ?4)
ORDER BY created_at DESC, id DESC
LIMIT ?5;

-- name: admin_workers
-- The database's clock, and the workers seen in the last ?1 seconds by id,
-- ?3 of them after id ?2 when given; one row of NULLs beside the clock
-- when there are none.
WITH c AS MATERIALIZED (SELECT strftime('%Y-%m-%d %H:%M:%f', 'now') AS now)
SELECT c.now, w.id, w.host, w.pid, w.version, w.started_at, w.last_claim_at, w.last_seen_at
FROM c
LEFT JOIN eventproc_workers AS w
  ON w.last_seen_at >= strftime('%Y-%m-%d %H:%M:%f', c.now, printf('%+.3f seconds', -?1))
 AND (?2 IS NULL OR w.id > ?2)
ORDER BY w.id
LIMIT ?3;

-- name: admin_paused
-- The paused subscriptions, with when, by whom and why.
SELECT handler, paused_at, actor, reason FROM handler_pauses;

-- name: admin_stats
-- /health's figures in one statement (see postgresql.sql).
WITH c AS MATERIALIZED (SELECT strftime('%Y-%m-%d %H:%M:%f', 'now') AS now)
SELECT e.backlog, e.due, e.in_flight, e.oldest, d.due, d.in_flight,
       (SELECT count(*) FROM event_dead_letters WHERE replayed_at IS NULL),
       c.now
FROM c,
     (SELECT count(*) AS backlog,
             count(*) FILTER (WHERE routed_at IS NULL
                                AND (next_attempt_at IS NULL
                                     OR next_attempt_at <= (SELECT now FROM c))
                                AND (locked_until IS NULL
                                     OR locked_until < (SELECT now FROM c))) AS due,
             count(*) FILTER (WHERE routed_at IS NULL
                                AND locked_until >= (SELECT now FROM c)) AS in_flight,
             min(created_at) AS oldest
      FROM events WHERE processed = 0) AS e,
     (SELECT count(*) FILTER (WHERE (next_attempt_at IS NULL
                                     OR next_attempt_at <= (SELECT now FROM c))
                                AND (locked_until IS NULL
                                     OR locked_until < (SELECT now FROM c))) AS due,
             count(*) FILTER (WHERE locked_until >= (SELECT now FROM c)) AS in_flight
      FROM event_deliveries WHERE status = 'pending') AS d;

-- name: admin_blocked_heads
-- The heads of blocked aggregates and what waits behind each, each row with
-- the database's clock (see postgresql.sql). Retrying only.
WITH c AS MATERIALIZED (SELECT strftime('%Y-%m-%d %H:%M:%f', 'now') AS now)
SELECT c.now, h.handler, h.event_id, h.event_type, h.aggregate_id, h.aggregate_type,
       h.created_at, h.next_attempt_at, h.retrying, h.waiting, h.waiting_due, h.waiting_since
FROM c
LEFT JOIN (
    SELECT * FROM (
        SELECT NULL AS handler, r.id AS event_id, r.event_type, r.aggregate_id,
               r.aggregate_type, r.created_at, r.next_attempt_at, r.processed = 0 AS retrying,
               (SELECT count(*) FROM events AS l
                WHERE l.aggregate_id = r.aggregate_id AND l.processed = 0
                  AND (l.created_at, l.id) > (r.created_at, r.id)) AS waiting,
               (SELECT count(*) FROM events AS l
                WHERE l.aggregate_id = r.aggregate_id AND l.processed = 0
                  AND (l.created_at, l.id) > (r.created_at, r.id)
                  AND (l.next_attempt_at IS NULL OR l.next_attempt_at <= (SELECT now FROM c))
                  AND (l.locked_until IS NULL OR l.locked_until < (SELECT now FROM c))) AS waiting_due,
               (SELECT min(l.created_at) FROM events AS l
                WHERE l.aggregate_id = r.aggregate_id AND l.processed = 0
                  AND (l.created_at, l.id) > (r.created_at, r.id)) AS waiting_since
        FROM (SELECT id, event_type, aggregate_id, aggregate_type, created_at, next_attempt_at,
                     processed,
                     row_number() OVER (PARTITION BY aggregate_id ORDER BY created_at, id)
                       AS rank
              FROM events
              WHERE aggregate_id IS NOT NULL AND routed_at IS NULL
                AND processed = 0 AND next_attempt_at > (SELECT now FROM c)) AS r
        WHERE r.rank = 1
          AND EXISTS (SELECT 1 FROM events AS l
                      WHERE l.aggregate_id = r.aggregate_id AND l.processed = 0
                        AND (l.created_at, l.id) > (r.created_at, r.id))
        ORDER BY r.created_at, r.id
        LIMIT ?1)
    UNION ALL
    SELECT * FROM (
        SELECT r.handler, r.event_id, r.event_type, r.aggregate_id, e.aggregate_type,
               r.event_created_at, r.next_attempt_at, r.status = 'pending' AS retrying,
               (SELECT count(*) FROM event_deliveries AS l
                WHERE l.aggregate_id = r.aggregate_id AND l.handler = r.handler
                  AND l.status = 'pending'
                  AND (l.event_created_at, l.event_id) > (r.event_created_at, r.event_id))
                  AS waiting,
               (SELECT count(*) FROM event_deliveries AS l
                WHERE l.aggregate_id = r.aggregate_id AND l.handler = r.handler
                  AND l.status = 'pending'
                  AND (l.event_created_at, l.event_id) > (r.event_created_at, r.event_id)
                  AND (l.next_attempt_at IS NULL OR l.next_attempt_at <= (SELECT now FROM c))
                  AND (l.locked_until IS NULL OR l.locked_until < (SELECT now FROM c))) AS waiting_due,
               (SELECT min(l.event_created_at) FROM event_deliveries AS l
                WHERE l.aggregate_id = r.aggregate_id AND l.handler = r.handler
                  AND l.status = 'pending'
                  AND (l.event_created_at, l.event_id) > (r.event_created_at, r.event_id))
                  AS waiting_since
        FROM (SELECT event_id, handler, event_type, aggregate_id, event_created_at,
                     next_attempt_at, status,
                     row_number() OVER (PARTITION BY aggregate_id, handler
                                        ORDER BY event_created_at, event_id) AS rank
              FROM event_deliveries
              WHERE aggregate_id IS NOT NULL
                AND status = 'pending' AND next_attempt_at > (SELECT now FROM c)) AS r
        JOIN events AS e ON e.id = r.event_id
        WHERE r.rank = 1
          AND EXISTS (SELECT 1 FROM event_deliveries AS l
                      WHERE l.aggregate_id = r.aggregate_id AND l.handler = r.handler
                        AND l.status = 'pending'
                        AND (l.event_created_at, l.event_id)
                            > (r.event_created_at, r.event_id))
        ORDER BY r.event_created_at, r.event_id, r.handler
        LIMIT ?1)
) AS h ON 1;

-- name: admin_blocked_heads_blocking
-- admin_blocked_heads with AGGREGATE_FAILURE=block: dead letters head blocks too.
WITH c AS MATERIALIZED (SELECT strftime('%Y-%m-%d %H:%M:%f', 'now') AS now)
SELECT c.now, h.handler, h.event_id, h.event_type, h.aggregate_id, h.aggregate_type,
       h.created_at, h.next_attempt_at, h.retrying, h.waiting, h.waiting_due, h.waiting_since
FROM c
LEFT JOIN (
    SELECT * FROM (
        SELECT NULL AS handler, r.id AS event_id, r.event_type, r.aggregate_id,
               r.aggregate_type, r.created_at, r.next_attempt_at, r.processed = 0 AS retrying,
               (SELECT count(*) FROM events AS l
                WHERE l.aggregate_id = r.aggregate_id AND l.processed = 0
                  AND (l.created_at, l.id) > (r.created_at, r.id)) AS waiting,
               (SELECT count(*) FROM events AS l
                WHERE l.aggregate_id = r.aggregate_id AND l.processed = 0
                  AND (l.created_at, l.id) > (r.created_at, r.id)
                  AND (l.next_attempt_at IS NULL OR l.next_attempt_at <= (SELECT now FROM c))
                  AND (l.locked_until IS NULL OR l.locked_until < (SELECT now FROM c))) AS waiting_due,
               (SELECT min(l.created_at) FROM events AS l
                WHERE l.aggregate_id = r.aggregate_id AND l.processed = 0
                  AND (l.created_at, l.id) > (r.created_at, r.id)) AS waiting_since
        FROM (SELECT id, event_type, aggregate_id, aggregate_type, created_at, next_attempt_at,
                     processed,
                     row_number() OVER (PARTITION BY aggregate_id ORDER BY created_at, id)
                       AS rank
              FROM events
              WHERE aggregate_id IS NOT NULL AND routed_at IS NULL
                AND (processed = 0 AND next_attempt_at > (SELECT now FROM c)
                     OR outcome = 'dead_lettered')) AS r
        WHERE r.rank = 1
          AND EXISTS (SELECT 1 FROM events AS l
                      WHERE l.aggregate_id = r.aggregate_id AND l.processed = 0
                        AND (l.created_at, l.id) > (r.created_at, r.id))
        ORDER BY r.created_at, r.id
        LIMIT ?1)
    UNION ALL
    SELECT * FROM (
        SELECT r.handler, r.event_id, r.event_type, r.aggregate_id, e.aggregate_type,
               r.event_created_at, r.next_attempt_at, r.status = 'pending' AS retrying,
               (SELECT count(*) FROM event_deliveries AS l
                WHERE l.aggregate_id = r.aggregate_id AND l.handler = r.handler
                  AND l.status = 'pending'
                  AND (l.event_created_at, l.event_id) > (r.event_created_at, r.event_id))
                  AS waiting,
               (SELECT count(*) FROM event_deliveries AS l
                WHERE l.aggregate_id = r.aggregate_id AND l.handler = r.handler
                  AND l.status = 'pending'
                  AND (l.event_created_at, l.event_id) > (r.event_created_at, r.event_id)
                  AND (l.next_attempt_at IS NULL OR l.next_attempt_at <= (SELECT now FROM c))
                  AND (l.locked_until IS NULL OR l.locked_until < (SELECT now FROM c))) AS waiting_due,
               (SELECT min(l.event_created_at) FROM event_deliveries AS l
                WHERE l.aggregate_id = r.aggregate_id AND l.handler = r.handler
                  AND l.status = 'pending'
                  AND (l.event_created_at, l.event_id) > (r.event_created_at, r.event_id))
                  AS waiting_since
        FROM (SELECT event_id, handler, event_type, aggregate_id, event_created_at,
                     next_attempt_at, status,
                     row_number() OVER (PARTITION BY aggregate_id, handler
                                        ORDER BY event_created_at, event_id) AS rank
              FROM event_deliveries
              WHERE aggregate_id IS NOT NULL
                AND (status = 'pending' AND next_attempt_at > (SELECT now FROM c)
                     OR outcome = 'dead_lettered')) AS r
        JOIN events AS e ON e.id = r.event_id
        WHERE r.rank = 1
          AND EXISTS (SELECT 1 FROM event_deliveries AS l
                      WHERE l.aggregate_id = r.aggregate_id AND l.handler = r.handler
                        AND l.status = 'pending'
                        AND (l.event_created_at, l.event_id)
                            > (r.event_created_at, r.event_id))
        ORDER BY r.event_created_at, r.event_id, r.handler
        LIMIT ?1)
) AS h ON 1;
