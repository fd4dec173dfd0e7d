-- eventproc's lifecycle statements on PostgreSQL (asyncpg: $n parameters).
-- The same names are in sqlite.sql. Each claim returns the event's columns
-- in schema.EVENT_COLUMNS order, payload and metadata as JSON text.
--
-- Claims: $1 token, $2 lease seconds, $3 limit, $4 window (ordered claims
-- test only the first $4 available events against the aggregate gate; the
-- unordered ones take it so that every claim has the same parameters).
-- Carrying claims first complete $5 ids / $6 tokens / $7 outcomes for
-- worker $8, in a CTE of the same statement: one statement and one commit
-- for both. An event they complete is not claimed again; an event they
-- unblock may be (the statement's snapshot still shows it pending, `done`
-- says otherwise).
--
-- The availability test is repeated outside the window on purpose: a row
-- claimed meanwhile by another worker is re-checked against the outer
-- WHERE only (not the subquery's snapshot), and that re-check is what keeps
-- two workers from claiming it.

-- name: event_claim
WITH picked AS (
    SELECT e.id FROM events e
    WHERE NOT e.processed
      AND (e.next_attempt_at IS NULL OR e.next_attempt_at <= now())
      AND (e.locked_until IS NULL OR e.locked_until < now())
      AND $4::int > 0
    ORDER BY e.priority DESC, e.created_at, e.id
    LIMIT $3
    FOR UPDATE OF e SKIP LOCKED
)
UPDATE events e
SET locked_by = $1, locked_until = now() + $2 * interval '1 second',
    attempts = e.attempts + 1
FROM picked WHERE e.id = picked.id
RETURNING e.id, e.event_type, e.aggregate_id, e.aggregate_type, e.payload::text,
          e.metadata::text, e.processed, e.version, e.created_at, e.created_by, e.priority,
          e.attempts, e.next_attempt_at, e.locked_by, e.locked_until, e.processed_at, e.outcome;

-- name: event_claim_carrying
WITH done AS (
    UPDATE events e
    SET processed = true, outcome = c.outcome, processed_at = now(), locked_by = NULL,
        locked_until = NULL, next_attempt_at = NULL,
        metadata = coalesce(e.metadata, '{}'::jsonb)
                   || jsonb_build_object('processed_at', now(), 'processed_by', $8::text)
    FROM unnest($5::uuid[], $6::text[], $7::text[]) AS c(id, token, outcome)
    WHERE e.id = c.id AND e.locked_by = c.token
    RETURNING e.id
), picked AS (
    SELECT e.id FROM events e
    WHERE NOT e.processed
      AND (e.next_attempt_at IS NULL OR e.next_attempt_at <= now())
      AND (e.locked_until IS NULL OR e.locked_until < now())
      AND $4::int > 0
      AND e.id <> ALL($5::uuid[])
    ORDER BY e.priority DESC, e.created_at, e.id
    LIMIT $3
    FOR UPDATE OF e SKIP LOCKED
)
UPDATE events e
SET locked_by = $1, locked_until = now() + $2 * interval '1 second',
    attempts = e.attempts + 1
FROM picked WHERE e.id = picked.id
RETURNING e.id, e.event_type, e.aggregate_id, e.aggregate_type, e.payload::text,
          e.metadata::text, e.processed, e.version, e.created_at, e.created_by, e.priority,
          e.attempts, e.next_attempt_at, e.locked_by, e.locked_until, e.processed_at, e.outcome;

-- name: event_claim_ordered
-- The gate: no earlier event of the same aggregate is still pending.
WITH picked AS (
    SELECT e.id FROM events e
    WHERE e.id IN (
            SELECT w.id FROM events w
            WHERE NOT w.processed
              AND (w.next_attempt_at IS NULL OR w.next_attempt_at <= now())
              AND (w.locked_until IS NULL OR w.locked_until < now())
            ORDER BY w.priority DESC, w.created_at, w.id
            LIMIT $4)
      AND NOT e.processed
      AND (e.next_attempt_at IS NULL OR e.next_attempt_at <= now())
      AND (e.locked_until IS NULL OR e.locked_until < now())
      AND (e.aggregate_id IS NULL OR NOT EXISTS (
            SELECT 1 FROM events p
            WHERE p.aggregate_id = e.aggregate_id AND NOT p.processed
              AND (p.created_at, p.id) < (e.created_at, e.id)))
    ORDER BY e.priority DESC, e.created_at, e.id
    LIMIT $3
    FOR UPDATE OF e SKIP LOCKED
)
UPDATE events e
SET locked_by = $1, locked_until = now() + $2 * interval '1 second',
    attempts = e.attempts + 1
FROM picked WHERE e.id = picked.id
RETURNING e.id, e.event_type, e.aggregate_id, e.aggregate_type, e.payload::text,
          e.metadata::text, e.processed, e.version, e.created_at, e.created_by, e.priority,
          e.attempts, e.next_attempt_at, e.locked_by, e.locked_until, e.processed_at, e.outcome;

-- name: event_claim_ordered_carrying
-- The completions are written in order (see event_complete); an earlier
-- event they complete no longer holds a later one back.
WITH done AS (
    UPDATE events e
    SET processed = true, outcome = c.outcome, processed_at = now(), locked_by = NULL,
        locked_until = NULL, next_attempt_at = NULL,
        metadata = coalesce(e.metadata, '{}'::jsonb)
                   || jsonb_build_object('processed_at', now(), 'processed_by', $8::text)
    FROM unnest($5::uuid[], $6::text[], $7::text[]) AS c(id, token, outcome)
    WHERE e.id = c.id AND e.locked_by = c.token
      AND (e.aggregate_id IS NULL OR NOT EXISTS (
          SELECT 1 FROM events p
          WHERE p.aggregate_id = e.aggregate_id AND NOT p.processed
            AND (p.created_at, p.id) < (e.created_at, e.id)
            AND NOT EXISTS (
                SELECT 1 FROM unnest($5::uuid[], $6::text[]) AS f(id, token)
                WHERE f.id = p.id AND f.token = p.locked_by)))
    RETURNING e.id
), picked AS (
    SELECT e.id FROM events e
    WHERE e.id IN (
            SELECT w.id FROM events w
            WHERE NOT w.processed
              AND (w.next_attempt_at IS NULL OR w.next_attempt_at <= now())
              AND (w.locked_until IS NULL OR w.locked_until < now())
            ORDER BY w.priority DESC, w.created_at, w.id
            LIMIT $4)
      AND NOT e.processed
      AND (e.next_attempt_at IS NULL OR e.next_attempt_at <= now())
      AND (e.locked_until IS NULL OR e.locked_until < now())
      AND (e.aggregate_id IS NULL OR NOT EXISTS (
            SELECT 1 FROM events p
            WHERE p.aggregate_id = e.aggregate_id AND NOT p.processed
              AND (p.created_at, p.id) < (e.created_at, e.id)
              AND p.id NOT IN (SELECT id FROM done)))
      AND e.id <> ALL($5::uuid[])
    ORDER BY e.priority DESC, e.created_at, e.id
    LIMIT $3
    FOR UPDATE OF e SKIP LOCKED
)
UPDATE events e
SET locked_by = $1, locked_until = now() + $2 * interval '1 second',
    attempts = e.attempts + 1
FROM picked WHERE e.id = picked.id
RETURNING e.id, e.event_type, e.aggregate_id, e.aggregate_type, e.payload::text,
          e.metadata::text, e.processed, e.version, e.created_at, e.created_by, e.priority,
          e.attempts, e.next_attempt_at, e.locked_by, e.locked_until, e.processed_at, e.outcome;

-- name: event_claim_ordered_blocking
-- AGGREGATE_FAILURE=block: a dead-lettered earlier event holds back too.
WITH picked AS (
    SELECT e.id FROM events e
    WHERE e.id IN (
            SELECT w.id FROM events w
            WHERE NOT w.processed
              AND (w.next_attempt_at IS NULL OR w.next_attempt_at <= now())
              AND (w.locked_until IS NULL OR w.locked_until < now())
            ORDER BY w.priority DESC, w.created_at, w.id
            LIMIT $4)
      AND NOT e.processed
      AND (e.next_attempt_at IS NULL OR e.next_attempt_at <= now())
      AND (e.locked_until IS NULL OR e.locked_until < now())
      AND (e.aggregate_id IS NULL OR (
            NOT EXISTS (
                SELECT 1 FROM events p
                WHERE p.aggregate_id = e.aggregate_id AND NOT p.processed
                  AND (p.created_at, p.id) < (e.created_at, e.id))
            AND NOT EXISTS (
                SELECT 1 FROM events p
                WHERE p.aggregate_id = e.aggregate_id AND p.outcome = 'dead_lettered'
                  AND (p.created_at, p.id) < (e.created_at, e.id))))
    ORDER BY e.priority DESC, e.created_at, e.id
    LIMIT $3
    FOR UPDATE OF e SKIP LOCKED
)
UPDATE events e
SET locked_by = $1, locked_until = now() + $2 * interval '1 second',
    attempts = e.attempts + 1
FROM picked WHERE e.id = picked.id
RETURNING e.id, e.event_type, e.aggregate_id, e.aggregate_type, e.payload::text,
          e.metadata::text, e.processed, e.version, e.created_at, e.created_by, e.priority,
          e.attempts, e.next_attempt_at, e.locked_by, e.locked_until, e.processed_at, e.outcome;

-- name: event_claim_ordered_blocking_carrying
WITH done AS (
    UPDATE events e
    SET processed = true, outcome = c.outcome, processed_at = now(), locked_by = NULL,
        locked_until = NULL, next_attempt_at = NULL,
        metadata = coalesce(e.metadata, '{}'::jsonb)
                   || jsonb_build_object('processed_at', now(), 'processed_by', $8::text)
    FROM unnest($5::uuid[], $6::text[], $7::text[]) AS c(id, token, outcome)
    WHERE e.id = c.id AND e.locked_by = c.token
      AND (e.aggregate_id IS NULL OR NOT EXISTS (
          SELECT 1 FROM events p
          WHERE p.aggregate_id = e.aggregate_id AND NOT p.processed
            AND (p.created_at, p.id) < (e.created_at, e.id)
            AND NOT EXISTS (
                SELECT 1 FROM unnest($5::uuid[], $6::text[]) AS f(id, token)
                WHERE f.id = p.id AND f.token = p.locked_by)))
    RETURNING e.id
), picked AS (
    SELECT e.id FROM events e
    WHERE e.id IN (
            SELECT w.id FROM events w
            WHERE NOT w.processed
              AND (w.next_attempt_at IS NULL OR w.next_attempt_at <= now())
              AND (w.locked_until IS NULL OR w.locked_until < now())
            ORDER BY w.priority DESC, w.created_at, w.id
            LIMIT $4)
      AND NOT e.processed
      AND (e.next_attempt_at IS NULL OR e.next_attempt_at <= now())
      AND (e.locked_until IS NULL OR e.locked_until < now())
      AND (e.aggregate_id IS NULL OR (
            NOT EXISTS (
                SELECT 1 FROM events p
                WHERE p.aggregate_id = e.aggregate_id AND NOT p.processed
                  AND (p.created_at, p.id) < (e.created_at, e.id)
                  AND p.id NOT IN (SELECT id FROM done))
            AND NOT EXISTS (
                SELECT 1 FROM events p
                WHERE p.aggregate_id = e.aggregate_id AND p.outcome = 'dead_lettered'
                  AND (p.created_at, p.id) < (e.created_at, e.id))))
      AND e.id <> ALL($5::uuid[])
    ORDER BY e.priority DESC, e.created_at, e.id
    LIMIT $3
    FOR UPDATE OF e SKIP LOCKED
)
UPDATE events e
SET locked_by = $1, locked_until = now() + $2 * interval '1 second',
    attempts = e.attempts + 1
FROM picked WHERE e.id = picked.id
RETURNING e.id, e.event_type, e.aggregate_id, e.aggregate_type, e.payload::text,
          e.metadata::text, e.processed, e.version, e.created_at, e.created_by, e.priority,
          e.attempts, e.next_attempt_at, e.locked_by, e.locked_until, e.processed_at, e.outcome;

-- name: event_complete
-- Complete the leased events $1 (fenced on tokens $2), each with its outcome
-- $3, for worker $4. With $5 (ORDERING=aggregate) an event is not completed
-- while an earlier event of its aggregate is pending and not completed by
-- this same statement: a run whose head lease was taken over while its
-- results waited (an outage) must not see its later events marked done
-- before the head ran again; they run again after it.
UPDATE events e
SET processed = true, outcome = c.outcome, processed_at = now(), locked_by = NULL,
    locked_until = NULL, next_attempt_at = NULL,
    metadata = coalesce(e.metadata, '{}'::jsonb)
               || jsonb_build_object('processed_at', now(), 'processed_by', $4::text)
FROM unnest($1::uuid[], $2::text[], $3::text[]) AS c(id, token, outcome)
WHERE e.id = c.id AND e.locked_by = c.token
  AND (NOT $5::bool OR e.aggregate_id IS NULL OR NOT EXISTS (
      SELECT 1 FROM events p
      WHERE p.aggregate_id = e.aggregate_id AND NOT p.processed
        AND (p.created_at, p.id) < (e.created_at, e.id)
        AND NOT EXISTS (
            SELECT 1 FROM unnest($1::uuid[], $2::text[]) AS f(id, token)
            WHERE f.id = p.id AND f.token = p.locked_by)));

-- name: event_retry
-- Back to pending after a failure: $1 ids, $2 tokens (the fence), $3 delay
-- seconds, $4 errors, $5 attempt numbers, $6 counted. A counted failure
-- records retry_count, last_error and last_error_at; an uncounted one
-- (RetryLater, eventproc's own database trouble) gives its attempt back.
UPDATE events e
SET locked_by = NULL, locked_until = NULL,
    next_attempt_at = now() + r.delay * interval '1 second',
    attempts = CASE WHEN r.counted THEN e.attempts ELSE e.attempts - 1 END,
    metadata = CASE
        WHEN r.counted THEN coalesce(e.metadata, '{}'::jsonb)
             || jsonb_build_object('retry_count', r.attempt, 'last_error', r.error,
                                   'last_error_at', now())
        ELSE e.metadata
    END
FROM unnest($1::uuid[], $2::text[], $3::float8[], $4::text[], $5::int[], $6::bool[])
     AS r(id, token, delay, error, attempt, counted)
WHERE e.id = r.id AND e.locked_by = r.token;

-- name: event_dead_letter
-- Close each fenced event as dead-lettered and insert its dead letter, in
-- one statement: $1 ids, $2 tokens, $3 messages, $4 retry counts, $5
-- tracebacks, $6 handlers, $7 fingerprints, $8 worker name.
WITH b AS (
    SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::int[], $5::text[],
                         $6::text[], $7::text[])
           AS b(id, token, error, retry_count, detail, handler, fingerprint)
), closed AS (
    UPDATE events e
    SET processed = true, outcome = 'dead_lettered', processed_at = now(), locked_by = NULL,
        locked_until = NULL, next_attempt_at = NULL,
        metadata = coalesce(e.metadata, '{}'::jsonb)
                   || jsonb_build_object('retry_count', b.retry_count,
                                         'last_error', left(b.error, 2000),
                                         'last_error_at', now(), 'processed_at', now(),
                                         'processed_by', $8::text, 'dead_lettered', true)
    FROM b WHERE e.id = b.id AND e.locked_by = b.token
    RETURNING e.id, e.event_type, e.payload, e.created_at
)
INSERT INTO event_dead_letters (id, event_id, event_type, payload, error_message, retry_count,
                                original_created_at, created_at, error_detail, handler,
                                error_fingerprint)
SELECT gen_random_uuid(), c.id, c.event_type, c.payload, b.error, b.retry_count,
       coalesce(c.created_at, now()), now(), b.detail, b.handler, b.fingerprint
FROM closed c JOIN b ON b.id = c.id;
