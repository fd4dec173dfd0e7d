-- eventproc's lifecycle statements on SQLite (sqlite3: :name parameters).
-- The same names are in postgresql.sql. Times are UTC text in the form
-- strftime('%Y-%m-%d %H:%M:%f') writes, so that they compare as times.
--
-- Claims: :token, :lease ('+30.000 seconds'), :limit, :window (ordered
-- claims test only the first :window available events against the
-- aggregate gate). Writers are serialized (BEGIN IMMEDIATE), so a claim
-- needs no SKIP LOCKED. A carrying claim runs event_complete first in the
-- same transaction: the claim then sees those events done, so it is the
-- same statement as the plain claim.

-- name: event_claim
WITH picked AS (
    SELECT e.id FROM events e
    WHERE e.processed = 0
      AND (e.next_attempt_at IS NULL OR e.next_attempt_at <= strftime('%Y-%m-%d %H:%M:%f', 'now'))
      AND (e.locked_until IS NULL OR e.locked_until < strftime('%Y-%m-%d %H:%M:%f', 'now'))
    ORDER BY e.priority DESC, e.created_at, e.id
    LIMIT :limit
)
UPDATE events
SET locked_by = :token, locked_until = strftime('%Y-%m-%d %H:%M:%f', 'now', :lease),
    attempts = events.attempts + 1
FROM picked WHERE events.id = picked.id
RETURNING id, event_type, aggregate_id, aggregate_type, payload, metadata, processed, version,
          created_at, created_by, priority, attempts, next_attempt_at, locked_by,
          locked_until, processed_at, outcome;

-- name: event_claim_carrying = event_claim

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
            LIMIT :window)
      AND e.processed = 0
      AND (e.next_attempt_at IS NULL OR e.next_attempt_at <= strftime('%Y-%m-%d %H:%M:%f', 'now'))
      AND (e.locked_until IS NULL OR e.locked_until < strftime('%Y-%m-%d %H:%M:%f', 'now'))
      AND (e.aggregate_id IS NULL OR NOT EXISTS (
            SELECT 1 FROM events p
            WHERE p.aggregate_id = e.aggregate_id AND p.processed = 0
              AND (p.created_at, p.id) < (e.created_at, e.id)))
    ORDER BY e.priority DESC, e.created_at, e.id
    LIMIT :limit
)
UPDATE events
SET locked_by = :token, locked_until = strftime('%Y-%m-%d %H:%M:%f', 'now', :lease),
    attempts = events.attempts + 1
FROM picked WHERE events.id = picked.id
RETURNING id, event_type, aggregate_id, aggregate_type, payload, metadata, processed, version,
          created_at, created_by, priority, attempts, next_attempt_at, locked_by,
          locked_until, processed_at, outcome;

-- name: event_claim_ordered_carrying = event_claim_ordered

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
            LIMIT :window)
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
    LIMIT :limit
)
UPDATE events
SET locked_by = :token, locked_until = strftime('%Y-%m-%d %H:%M:%f', 'now', :lease),
    attempts = events.attempts + 1
FROM picked WHERE events.id = picked.id
RETURNING id, event_type, aggregate_id, aggregate_type, payload, metadata, processed, version,
          created_at, created_by, priority, attempts, next_attempt_at, locked_by,
          locked_until, processed_at, outcome;

-- name: event_claim_ordered_blocking_carrying = event_claim_ordered_blocking

-- name: event_complete
-- Complete the events :ids leased to :token with :outcome, for :worker. With
-- :in_order (ORDERING=aggregate) an event is not completed while an earlier
-- event of its aggregate is pending and not among :flushed ([id, token]
-- pairs this same write-back completes): see postgresql.sql.
UPDATE events
SET processed = 1, outcome = :outcome, processed_at = strftime('%Y-%m-%d %H:%M:%f', 'now'),
    locked_by = NULL, locked_until = NULL, next_attempt_at = NULL,
    metadata = json_patch(coalesce(metadata, '{}'),
                          json_object('processed_at', strftime('%Y-%m-%d %H:%M:%f', 'now'),
                                      'processed_by', :worker))
WHERE locked_by = :token AND id IN (SELECT value FROM json_each(:ids))
  AND (NOT :in_order OR aggregate_id IS NULL OR NOT EXISTS (
      SELECT 1 FROM events p
      WHERE p.aggregate_id = events.aggregate_id AND p.processed = 0
        AND (p.created_at, p.id) < (events.created_at, events.id)
        AND NOT EXISTS (
            SELECT 1 FROM json_each(:flushed) f
            WHERE json_extract(f.value, '$[0]') = p.id
              AND json_extract(f.value, '$[1]') = p.locked_by)));

-- name: event_retry
-- Back to pending after a failure. :rows is a JSON array of
-- {id, token, delay ('+1.500 seconds'), error, attempt, counted}; see
-- postgresql.sql for what counted means.
UPDATE events
SET locked_by = NULL, locked_until = NULL,
    next_attempt_at = strftime('%Y-%m-%d %H:%M:%f', 'now', r.delay),
    attempts = CASE WHEN r.counted THEN events.attempts ELSE events.attempts - 1 END,
    metadata = CASE
        WHEN r.counted THEN json_patch(coalesce(events.metadata, '{}'),
             json_object('retry_count', r.attempt, 'last_error', r.error,
                         'last_error_at', strftime('%Y-%m-%d %H:%M:%f', 'now')))
        ELSE events.metadata
    END
FROM (SELECT json_extract(value, '$.id') AS id, json_extract(value, '$.token') AS token,
             json_extract(value, '$.delay') AS delay, json_extract(value, '$.error') AS error,
             json_extract(value, '$.attempt') AS attempt,
             json_extract(value, '$.counted') AS counted
      FROM json_each(:rows)) AS r
WHERE events.id = r.id AND events.locked_by = r.token;

-- name: event_dead_letter
-- Two statements, one transaction (SQLite has no data-modifying CTE): the
-- dead letters of the fenced events first, then the events closed. :rows is
-- a JSON array of {id, token, error, retry_count, detail, handler,
-- fingerprint, letter_id}; :worker names this worker.
INSERT INTO event_dead_letters (id, event_id, event_type, payload, error_message, retry_count,
                                original_created_at, created_at, error_detail, handler,
                                error_fingerprint)
SELECT json_extract(r.value, '$.letter_id'), e.id, e.event_type, e.payload,
       json_extract(r.value, '$.error'), json_extract(r.value, '$.retry_count'),
       coalesce(e.created_at, strftime('%Y-%m-%d %H:%M:%f', 'now')),
       strftime('%Y-%m-%d %H:%M:%f', 'now'), json_extract(r.value, '$.detail'),
       json_extract(r.value, '$.handler'), json_extract(r.value, '$.fingerprint')
FROM json_each(:rows) AS r
JOIN events e ON e.id = json_extract(r.value, '$.id')
             AND e.locked_by = json_extract(r.value, '$.token');
UPDATE events
SET processed = 1, outcome = 'dead_lettered', processed_at = strftime('%Y-%m-%d %H:%M:%f', 'now'),
    locked_by = NULL, locked_until = NULL, next_attempt_at = NULL,
    metadata = json_patch(coalesce(metadata, '{}'), json_object(
        'retry_count', r.retry_count, 'last_error', substr(r.error, 1, 2000),
        'last_error_at', strftime('%Y-%m-%d %H:%M:%f', 'now'),
        'processed_at', strftime('%Y-%m-%d %H:%M:%f', 'now'),
        'processed_by', :worker, 'dead_lettered', json('true')))
FROM (SELECT json_extract(value, '$.id') AS id, json_extract(value, '$.token') AS token,
             json_extract(value, '$.error') AS error,
             json_extract(value, '$.retry_count') AS retry_count
      FROM json_each(:rows)) AS r
WHERE events.id = r.id AND events.locked_by = r.token;
