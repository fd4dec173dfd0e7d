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

-- name: event_write_back
-- Every kind of result of a batch in one statement, each fenced on its
-- claim token (a row whose lease was lost matches nothing):
--   successes: $1 ids, $2 tokens, $3 outcomes, for worker $4; with $5
--     (ORDERING=aggregate) an event is not completed while an earlier event
--     of its aggregate is pending and not completed by this same statement:
--     a run whose head lease was taken over while its results waited (an
--     outage) must not see its later events marked done before the head ran
--     again; they run again after it;
--   retries: $6 ids, $7 tokens, $8 delay seconds, $9 errors, $10 attempts,
--     $11 counted. A counted failure records retry_count, last_error and
--     last_error_at; an uncounted one (RetryLater, eventproc's own database
--     trouble) gives its attempt back;
--   dead letters: $12 ids, $13 tokens, $14 errors, $15 retry counts, $16
--     tracebacks, $17 handlers, $18 fingerprints: the event is closed and
--     its dead letter inserted.
-- Returns the id of every event written (a dead-lettered one twice).
WITH done AS (
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
                WHERE f.id = p.id AND f.token = p.locked_by)))
    RETURNING e.id
), retried AS (
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
    FROM unnest($6::uuid[], $7::text[], $8::float8[], $9::text[], $10::int[], $11::bool[])
         AS r(id, token, delay, error, attempt, counted)
    WHERE e.id = r.id AND e.locked_by = r.token
    RETURNING e.id
), b AS (
    SELECT * FROM unnest($12::uuid[], $13::text[], $14::text[], $15::int[], $16::text[],
                         $17::text[], $18::text[])
           AS b(id, token, error, retry_count, detail, handler, fingerprint)
), closed AS (
    UPDATE events e
    SET processed = true, outcome = 'dead_lettered', processed_at = now(), locked_by = NULL,
        locked_until = NULL, next_attempt_at = NULL,
        metadata = coalesce(e.metadata, '{}'::jsonb)
                   || jsonb_build_object('retry_count', b.retry_count,
                                         'last_error', left(b.error, 2000),
                                         'last_error_at', now(), 'processed_at', now(),
                                         'processed_by', $4::text, 'dead_lettered', true)
    FROM b WHERE e.id = b.id AND e.locked_by = b.token
    RETURNING e.id, e.event_type, e.payload, e.created_at, b.token
), letters AS (
    INSERT INTO event_dead_letters (id, event_id, event_type, payload, error_message,
                                    retry_count, original_created_at, created_at,
                                    error_detail, handler, error_fingerprint)
    SELECT gen_random_uuid(), c.id, c.event_type, c.payload, b.error, b.retry_count,
           coalesce(c.created_at, now()), now(), b.detail, b.handler, b.fingerprint
    -- On the token too: a batch may hold an older, fenced-out claim's
    -- dead letter for the same event (a flush that waited out an outage
    -- while the event was claimed again), which must not add a second row.
    FROM closed c JOIN b ON b.id = c.id AND b.token = c.token
    RETURNING event_id
)
SELECT id FROM done
UNION ALL SELECT id FROM retried
UNION ALL SELECT event_id FROM letters;

-- name: event_hold
-- A transactional handler's first statement: take the event's row lock, if
-- the lease $1 / $2 is still ours, so that nobody claims it meanwhile.
UPDATE events SET locked_until = locked_until
WHERE id = $1 AND locked_by = $2
RETURNING id;

-- name: event_release
-- Give claims back unfinished ($1 ids, $2 tokens): the attempt is not spent.
UPDATE events e
SET locked_by = NULL, locked_until = NULL, attempts = e.attempts - 1
FROM unnest($1::uuid[], $2::text[]) AS l(id, token)
WHERE e.id = l.id AND e.locked_by = l.token
RETURNING e.id;

-- name: event_renew
-- Extend the leases $1 ids / $2 tokens by $3 seconds from now.
UPDATE events e
SET locked_until = now() + $3 * interval '1 second'
FROM unnest($1::uuid[], $2::text[]) AS l(id, token)
WHERE e.id = l.id AND e.locked_by = l.token
RETURNING e.id;

-- name: event_replay
-- Make the processed events $1 pending again. The replay trigger does the
-- rest (fresh budget, dead letters closed, the last failure kept in
-- metadata.previous_failures), as for the seed's raw UPDATE.
UPDATE events
SET processed = false,
    metadata = coalesce(metadata, '{}'::jsonb)
               || jsonb_build_object('replayed', true, 'replayed_at', now())
WHERE id = ANY($1::uuid[]) AND processed
RETURNING id;

-- name: event_claim_one
-- A manual trigger: claim event $1 for token $2 for $3 seconds now, even if
-- its retry is not due yet; never past another worker's live lease.
UPDATE events e
SET locked_by = $2, locked_until = now() + $3 * interval '1 second',
    attempts = e.attempts + 1, next_attempt_at = NULL
WHERE e.id = $1 AND NOT e.processed
  AND (e.locked_until IS NULL OR e.locked_until < now())
RETURNING e.id, e.event_type, e.aggregate_id, e.aggregate_type, e.payload::text,
          e.metadata::text, e.processed, e.version, e.created_at, e.created_by, e.priority,
          e.attempts, e.next_attempt_at, e.locked_by, e.locked_until, e.processed_at, e.outcome;

-- name: event_claim_one_ordered
-- ... and not while an earlier event of its aggregate is pending.
UPDATE events e
SET locked_by = $2, locked_until = now() + $3 * interval '1 second',
    attempts = e.attempts + 1, next_attempt_at = NULL
WHERE e.id = $1 AND NOT e.processed
  AND (e.locked_until IS NULL OR e.locked_until < now())
  AND (e.aggregate_id IS NULL OR NOT EXISTS (
        SELECT 1 FROM events p
        WHERE p.aggregate_id = e.aggregate_id AND NOT p.processed
          AND (p.created_at, p.id) < (e.created_at, e.id)))
RETURNING e.id, e.event_type, e.aggregate_id, e.aggregate_type, e.payload::text,
          e.metadata::text, e.processed, e.version, e.created_at, e.created_by, e.priority,
          e.attempts, e.next_attempt_at, e.locked_by, e.locked_until, e.processed_at, e.outcome;

-- name: event_claim_one_ordered_blocking
-- ... nor behind a dead-lettered one (AGGREGATE_FAILURE=block).
UPDATE events e
SET locked_by = $2, locked_until = now() + $3 * interval '1 second',
    attempts = e.attempts + 1, next_attempt_at = NULL
WHERE e.id = $1 AND NOT e.processed
  AND (e.locked_until IS NULL OR e.locked_until < now())
  AND (e.aggregate_id IS NULL OR NOT EXISTS (
        SELECT 1 FROM events p
        WHERE p.aggregate_id = e.aggregate_id
          AND (NOT p.processed OR p.outcome = 'dead_lettered')
          AND (p.created_at, p.id) < (e.created_at, e.id)))
RETURNING e.id, e.event_type, e.aggregate_id, e.aggregate_type, e.payload::text,
          e.metadata::text, e.processed, e.version, e.created_at, e.created_by, e.priority,
          e.attempts, e.next_attempt_at, e.locked_by, e.locked_until, e.processed_at, e.outcome;

-- name: event_revoke_stale_runs
-- Take back the rest of the runs behind heads just taken over ($1 their
-- aggregates): the stalled worker's later events (leased with its expired
-- lease, not $2) must not run ahead of the head. Rows locked right now
-- belong to a transaction still in progress (perhaps of a paused worker):
-- never wait for it.
UPDATE events SET locked_by = NULL, locked_until = NULL
WHERE id IN (
    SELECT id FROM events
    WHERE aggregate_id = ANY($1::uuid[]) AND NOT processed
      AND locked_by IS NOT NULL AND locked_by <> $2
    FOR UPDATE SKIP LOCKED)
RETURNING id;

-- name: event_runs_behind
-- For each head $1: the first $2 events of its aggregate that are pending
-- (or, with $3, dead-lettered), in order, with whether each is processed and
-- ready (due, not leased). One index seek per aggregate
-- (events_aggregate_pending_idx), however many wait behind the head.
SELECT h.id, r.id, r.processed, r.ready
FROM events h
CROSS JOIN LATERAL (
    SELECT e.id, e.processed, e.created_at,
           ((e.next_attempt_at IS NULL OR e.next_attempt_at <= now())
            AND (e.locked_until IS NULL OR e.locked_until < now())) AS ready
    FROM events e
    WHERE e.aggregate_id = h.aggregate_id
      AND (NOT e.processed OR ($3::bool AND e.outcome = 'dead_lettered'))
    ORDER BY e.created_at, e.id
    LIMIT $2) r
WHERE h.id = ANY($1::uuid[])
ORDER BY h.id, r.created_at, r.id;

-- name: event_lock_available
-- Which of $1 are available and not locked by anyone else right now (the
-- rows are locked for this transaction).
SELECT id FROM events
WHERE id = ANY($1::uuid[]) AND NOT processed
  AND (next_attempt_at IS NULL OR next_attempt_at <= now())
  AND (locked_until IS NULL OR locked_until < now())
FOR UPDATE SKIP LOCKED;

-- name: event_claim_followers
-- Lease the events $1 (locked by this transaction) to token $2 for $3 seconds.
UPDATE events e
SET locked_by = $2, locked_until = now() + $3 * interval '1 second',
    attempts = e.attempts + 1
WHERE e.id = ANY($1::uuid[]) AND NOT e.processed
  AND (e.next_attempt_at IS NULL OR e.next_attempt_at <= now())
  AND (e.locked_until IS NULL OR e.locked_until < now())
RETURNING e.id, e.event_type, e.aggregate_id, e.aggregate_type, e.payload::text,
          e.metadata::text, e.processed, e.version, e.created_at, e.created_by, e.priority,
          e.attempts, e.next_attempt_at, e.locked_by, e.locked_until, e.processed_at, e.outcome;

-- name: dead_letter_discard
-- Delete the dead letters $1; their events, if still dead-lettered, are
-- marked discarded (no longer holding back an aggregate, still replayable).
WITH gone AS (
    DELETE FROM event_dead_letters WHERE id = ANY($1::uuid[]) RETURNING event_id
), marked AS (
    UPDATE events SET outcome = 'discarded'
    WHERE id IN (SELECT event_id FROM gone) AND outcome = 'dead_lettered'
)
SELECT event_id FROM gone;

-- name: event_insert
-- Publish: one array per column ($1 ids ... $9 priorities; payloads and
-- metadata as JSON text), ids already present skipped. A fixed text that
-- asyncpg prepares once, whatever the batch size.
INSERT INTO events (id, event_type, aggregate_id, aggregate_type, payload,
                    metadata, version, created_by, priority)
SELECT u.id, u.event_type, u.aggregate_id, u.aggregate_type, u.payload::jsonb,
       u.metadata::jsonb, u.version, u.created_by, u.priority
FROM unnest($1::uuid[], $2::text[], $3::uuid[], $4::text[], $5::text[],
            $6::text[], $7::int[], $8::text[], $9::int[])
     AS u(id, event_type, aggregate_id, aggregate_type, payload, metadata,
          version, created_by, priority)
ON CONFLICT (id) DO NOTHING
RETURNING id;
