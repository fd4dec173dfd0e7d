-- eventproc's lifecycle statements on PostgreSQL (asyncpg: $n parameters).
-- The same names are in sqlite.sql. Each claim returns the event's columns
-- in schema.EVENT_COLUMNS order, payload and metadata as JSON text.
--
-- The claimed rows are updated through `id = ANY(ARRAY(SELECT ...))` (for
-- deliveries, their ctid), not a join: a prepared statement's generic plan
-- cannot know LIMIT $3, estimates thousands of rows, and joined them by a
-- hash over a sequential scan of the whole table; measured, that made every
-- claim of a 20,000-event drain 3x slower once PostgreSQL switched plans.
--
-- Claims: $1 token, $2 lease seconds, $3 limit, $4 window (ordered claims
-- test only the first $4 available events against the aggregate gate; the
-- unordered ones take it so that every claim has the same parameters).
-- Carrying claims first complete $5 ids / $6 tokens / $7 outcomes for
-- worker $8 ($9: the subscription that handled each, kept as
-- metadata.handled_by; a backfill and the admin API read it), in a CTE of
-- the same statement: one statement and one commit
-- for both. An event they complete is not claimed again; an event they
-- unblock may be (the statement's snapshot still shows it pending, `done`
-- says otherwise).
--
-- The per-row tests against event_deliveries in ordered claims and
-- completions (the handlers an event must wait for, an earlier pending
-- delivery of its handler) are index probes of event_deliveries_aggregate_idx
-- that find nothing when no delivery is open (one subscription per event,
-- the common case). They used to sit behind one test per statement that the
-- table held any such delivery; that test saved no execution time and cost
-- every claim its planning (bench/claim_sql_ab.py: 0.065 ms of 0.63 ms
-- planned, 3.8 % of the carrying claim).
--
-- An event moved onto deliveries (routed_at set) is never claimable on its
-- row: its next_attempt_at is 9999-12-31, so the claims need no test of
-- their own. (They had one, `routed_at IS NULL`: before the table's first
-- ANALYZE the planner took it to match 0.5 % of the rows and sorted a
-- sequential scan for every claim instead of reading the pending index,
-- a 3x slower drain.)
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
WHERE e.id = ANY(ARRAY(SELECT id FROM picked))
RETURNING e.id, e.event_type, e.aggregate_id, e.aggregate_type, e.payload::text,
          e.metadata::text, e.processed, e.version, e.created_at, e.created_by, e.priority,
          e.attempts, e.next_attempt_at, e.locked_by, e.locked_until, e.processed_at, e.outcome;

-- name: event_claim_carrying
WITH done AS (
    UPDATE events e
    SET processed = true, outcome = c.outcome, processed_at = now(), locked_by = NULL,
        locked_until = NULL, next_attempt_at = NULL,
        metadata = coalesce(e.metadata, '{}'::jsonb)
                   || CASE WHEN c.outcome = 'skipped'
                           THEN jsonb_build_object('processed_at', now(), 'processed_by', $8::text,
                                                   'skipped_reason',
                                                   'no subscription takes this event')
                           WHEN c.handler IS NULL
                           THEN jsonb_build_object('processed_at', now(), 'processed_by', $8::text)
                           ELSE jsonb_build_object('processed_at', now(), 'processed_by', $8::text,
                                                   'handled_by', c.handler) END
    FROM unnest($5::uuid[], $6::text[], $7::text[], $9::text[]) AS c(id, token, outcome, handler)
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
WHERE e.id = ANY(ARRAY(SELECT id FROM picked))
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
            WHERE p.aggregate_id = e.aggregate_id AND NOT p.processed AND p.routed_at IS NULL
              AND (p.created_at, p.id) < (e.created_at, e.id)))
    ORDER BY e.priority DESC, e.created_at, e.id
    LIMIT $3
    FOR UPDATE OF e SKIP LOCKED
)
UPDATE events e
SET locked_by = $1, locked_until = now() + $2 * interval '1 second',
    attempts = e.attempts + 1
WHERE e.id = ANY(ARRAY(SELECT id FROM picked))
RETURNING e.id, e.event_type, e.aggregate_id, e.aggregate_type, e.payload::text,
          e.metadata::text, e.processed, e.version, e.created_at, e.created_by, e.priority,
          e.attempts, e.next_attempt_at, e.locked_by, e.locked_until, e.processed_at, e.outcome,
          ARRAY(SELECT DISTINCT d.handler FROM event_deliveries d
                     WHERE d.aggregate_id = e.aggregate_id AND d.status = 'pending'
                       AND d.locked_by IS DISTINCT FROM $1::text
                       AND (d.event_created_at, d.event_id) < (e.created_at, e.id));

-- name: event_claim_ordered_carrying
-- The completions are written in order (see event_complete); an earlier
-- event they complete no longer holds a later one back.
-- The in-order gate is two ANDed tests (each "no aggregate, or ..."), not
-- one OR over an AND: from that form PostgreSQL derived a copy of the first
-- test and ran its subquery twice per completed row (EXPLAIN ANALYZE: the
-- completions' part took 0.52 ms per 20 rows against 0.30 written this way).
-- The same holds in event_claim_ordered_blocking_carrying and
-- event_write_back.
WITH done AS (
    UPDATE events e
    SET processed = true, outcome = c.outcome, processed_at = now(), locked_by = NULL,
        locked_until = NULL, next_attempt_at = NULL,
        metadata = coalesce(e.metadata, '{}'::jsonb)
                   || CASE WHEN c.outcome = 'skipped'
                           THEN jsonb_build_object('processed_at', now(), 'processed_by', $8::text,
                                                   'skipped_reason',
                                                   'no subscription takes this event')
                           WHEN c.handler IS NULL
                           THEN jsonb_build_object('processed_at', now(), 'processed_by', $8::text)
                           ELSE jsonb_build_object('processed_at', now(), 'processed_by', $8::text,
                                                   'handled_by', c.handler) END
    FROM unnest($5::uuid[], $6::text[], $7::text[], $9::text[]) AS c(id, token, outcome, handler)
    WHERE e.id = c.id AND e.locked_by = c.token
      AND (e.aggregate_id IS NULL OR NOT EXISTS (
          SELECT 1 FROM events p
          WHERE p.aggregate_id = e.aggregate_id AND NOT p.processed AND p.routed_at IS NULL
            AND (p.created_at, p.id) < (e.created_at, e.id)
            AND NOT EXISTS (
                SELECT 1 FROM unnest($5::uuid[], $6::text[]) AS f(id, token)
                WHERE f.id = p.id AND f.token = p.locked_by)))
      AND (e.aggregate_id IS NULL
           OR NOT EXISTS (
              SELECT 1 FROM event_deliveries d
              WHERE d.aggregate_id = e.aggregate_id AND d.handler = c.handler
                AND d.status = 'pending'
                AND (d.event_created_at, d.event_id) < (e.created_at, e.id)))
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
            WHERE p.aggregate_id = e.aggregate_id AND NOT p.processed AND p.routed_at IS NULL
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
WHERE e.id = ANY(ARRAY(SELECT id FROM picked))
RETURNING e.id, e.event_type, e.aggregate_id, e.aggregate_type, e.payload::text,
          e.metadata::text, e.processed, e.version, e.created_at, e.created_by, e.priority,
          e.attempts, e.next_attempt_at, e.locked_by, e.locked_until, e.processed_at, e.outcome,
          ARRAY(SELECT DISTINCT d.handler FROM event_deliveries d
                     WHERE d.aggregate_id = e.aggregate_id AND d.status = 'pending'
                       AND d.locked_by IS DISTINCT FROM $1::text
                       AND (d.event_created_at, d.event_id) < (e.created_at, e.id));

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
                WHERE p.aggregate_id = e.aggregate_id AND NOT p.processed AND p.routed_at IS NULL
                  AND (p.created_at, p.id) < (e.created_at, e.id))
            AND NOT EXISTS (
                SELECT 1 FROM events p
                WHERE p.aggregate_id = e.aggregate_id AND p.outcome = 'dead_lettered'
                  AND p.routed_at IS NULL
                  AND (p.created_at, p.id) < (e.created_at, e.id))))
    ORDER BY e.priority DESC, e.created_at, e.id
    LIMIT $3
    FOR UPDATE OF e SKIP LOCKED
)
UPDATE events e
SET locked_by = $1, locked_until = now() + $2 * interval '1 second',
    attempts = e.attempts + 1
WHERE e.id = ANY(ARRAY(SELECT id FROM picked))
RETURNING e.id, e.event_type, e.aggregate_id, e.aggregate_type, e.payload::text,
          e.metadata::text, e.processed, e.version, e.created_at, e.created_by, e.priority,
          e.attempts, e.next_attempt_at, e.locked_by, e.locked_until, e.processed_at, e.outcome,
          ARRAY(SELECT DISTINCT d.handler FROM event_deliveries d
                     WHERE d.aggregate_id = e.aggregate_id
                       AND d.locked_by IS DISTINCT FROM $1::text
                       AND (d.status = 'pending' OR d.outcome = 'dead_lettered')
                       AND (d.event_created_at, d.event_id) < (e.created_at, e.id));

-- name: event_claim_ordered_blocking_carrying
WITH done AS (
    UPDATE events e
    SET processed = true, outcome = c.outcome, processed_at = now(), locked_by = NULL,
        locked_until = NULL, next_attempt_at = NULL,
        metadata = coalesce(e.metadata, '{}'::jsonb)
                   || CASE WHEN c.outcome = 'skipped'
                           THEN jsonb_build_object('processed_at', now(), 'processed_by', $8::text,
                                                   'skipped_reason',
                                                   'no subscription takes this event')
                           WHEN c.handler IS NULL
                           THEN jsonb_build_object('processed_at', now(), 'processed_by', $8::text)
                           ELSE jsonb_build_object('processed_at', now(), 'processed_by', $8::text,
                                                   'handled_by', c.handler) END
    FROM unnest($5::uuid[], $6::text[], $7::text[], $9::text[]) AS c(id, token, outcome, handler)
    WHERE e.id = c.id AND e.locked_by = c.token
      AND (e.aggregate_id IS NULL OR NOT EXISTS (
          SELECT 1 FROM events p
          WHERE p.aggregate_id = e.aggregate_id AND NOT p.processed AND p.routed_at IS NULL
            AND (p.created_at, p.id) < (e.created_at, e.id)
            AND NOT EXISTS (
                SELECT 1 FROM unnest($5::uuid[], $6::text[]) AS f(id, token)
                WHERE f.id = p.id AND f.token = p.locked_by)))
      AND (e.aggregate_id IS NULL
           OR NOT EXISTS (
              SELECT 1 FROM event_deliveries d
              WHERE d.aggregate_id = e.aggregate_id AND d.handler = c.handler
                AND d.status = 'pending'
                AND (d.event_created_at, d.event_id) < (e.created_at, e.id)))
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
                WHERE p.aggregate_id = e.aggregate_id AND NOT p.processed AND p.routed_at IS NULL
                  AND (p.created_at, p.id) < (e.created_at, e.id)
                  AND p.id NOT IN (SELECT id FROM done))
            AND NOT EXISTS (
                SELECT 1 FROM events p
                WHERE p.aggregate_id = e.aggregate_id AND p.outcome = 'dead_lettered'
                  AND p.routed_at IS NULL
                  AND (p.created_at, p.id) < (e.created_at, e.id))))
      AND e.id <> ALL($5::uuid[])
    ORDER BY e.priority DESC, e.created_at, e.id
    LIMIT $3
    FOR UPDATE OF e SKIP LOCKED
)
UPDATE events e
SET locked_by = $1, locked_until = now() + $2 * interval '1 second',
    attempts = e.attempts + 1
WHERE e.id = ANY(ARRAY(SELECT id FROM picked))
RETURNING e.id, e.event_type, e.aggregate_id, e.aggregate_type, e.payload::text,
          e.metadata::text, e.processed, e.version, e.created_at, e.created_by, e.priority,
          e.attempts, e.next_attempt_at, e.locked_by, e.locked_until, e.processed_at, e.outcome,
          ARRAY(SELECT DISTINCT d.handler FROM event_deliveries d
                     WHERE d.aggregate_id = e.aggregate_id
                       AND d.locked_by IS DISTINCT FROM $1::text
                       AND (d.status = 'pending' OR d.outcome = 'dead_lettered')
                       AND (d.event_created_at, d.event_id) < (e.created_at, e.id));

-- name: event_write_back
-- Every kind of result of a batch in one statement, each fenced on its
-- claim token (a row whose lease was lost matches nothing):
--   successes: $1 ids, $2 tokens, $3 outcomes, for worker $4; with $5
--     (ORDERING=aggregate) an event is not completed while an earlier event
--     of its aggregate is pending on its row and not completed by this same
--     statement (a claim puts an aggregate's events on their rows only when
--     one handler takes them all, so those are its own run's):
--     a run whose head lease was taken over while its results waited (an
--     outage) must not see its later events marked done before the head ran
--     again; they run again after it;
--   retries: $6 ids, $7 tokens, $8 delay seconds, $9 errors, $10 attempts,
--     $11 counted. A counted failure records retry_count, last_error and
--     last_error_at; an uncounted one (RetryLater, eventproc's own database
--     trouble) gives its attempt back;
--   dead letters: $12 ids, $13 tokens, $14 errors, $15 retry counts, $16
--     tracebacks, $17 handlers, $18 fingerprints: the event is closed and
--     its dead letter inserted;
--   $19: the handler of each success ($1), for the in-order test: nor while
--     an earlier delivery of the same handler in its aggregate is pending.
-- Only events handled on their own row come here (routed_at NULL); the
-- results of deliveries go to delivery_write_back, which the store runs
-- first. A failure of a handler on the event's row moves its event to a
-- delivery first (delivery_open), so the retries here are the rare ones
-- with no handler.
-- The in-order exemption reads the batch's own rows fresh (held): each is
-- locked, waiting for a claim taking it over right now, so that a snapshot
-- older than that claim's commit never lets a later event complete ahead
-- of its predecessor's new handling. held is read whole (locking every row
-- in id order) before the first row is updated: the count is a one-time
-- filter, and a row this statement has already updated could not be locked.
-- Returns the id of every event written (a dead-lettered one twice).
WITH held AS MATERIALIZED (
    SELECT e.id FROM events e
    JOIN unnest($1::uuid[], $2::text[]) AS h(id, token) ON e.id = h.id AND e.locked_by = h.token
    WHERE $5::bool AND e.aggregate_id IS NOT NULL
    ORDER BY e.id
    FOR UPDATE OF e
), done AS (
    UPDATE events e
    SET processed = true, outcome = c.outcome, processed_at = now(), locked_by = NULL,
        locked_until = NULL, next_attempt_at = NULL,
        metadata = coalesce(e.metadata, '{}'::jsonb)
                   || CASE WHEN c.outcome = 'skipped'
                           THEN jsonb_build_object('processed_at', now(), 'processed_by', $4::text,
                                                   'skipped_reason',
                                                   'no subscription takes this event')
                           WHEN c.handler IS NULL
                           THEN jsonb_build_object('processed_at', now(), 'processed_by', $4::text)
                           ELSE jsonb_build_object('processed_at', now(), 'processed_by', $4::text,
                                                   'handled_by', c.handler) END
    FROM unnest($1::uuid[], $2::text[], $3::text[], $19::text[]) AS c(id, token, outcome, handler)
    WHERE e.id = c.id AND e.locked_by = c.token AND (SELECT count(*) FROM held) >= 0
      AND (NOT $5::bool OR e.aggregate_id IS NULL OR NOT EXISTS (
          SELECT 1 FROM events p
          WHERE p.aggregate_id = e.aggregate_id AND NOT p.processed AND p.routed_at IS NULL
            AND (p.created_at, p.id) < (e.created_at, e.id)
            AND NOT EXISTS (SELECT 1 FROM held f WHERE f.id = p.id)))
      AND (NOT $5::bool OR e.aggregate_id IS NULL
           OR NOT EXISTS (
              SELECT 1 FROM event_deliveries d
              WHERE d.aggregate_id = e.aggregate_id AND d.handler = c.handler
                AND d.status = 'pending'
                AND (d.event_created_at, d.event_id) < (e.created_at, e.id)))
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
WHERE e.id = $1 AND NOT e.processed AND e.routed_at IS NULL
  AND (e.locked_until IS NULL OR e.locked_until < now())
RETURNING e.id, e.event_type, e.aggregate_id, e.aggregate_type, e.payload::text,
          e.metadata::text, e.processed, e.version, e.created_at, e.created_by, e.priority,
          e.attempts, e.next_attempt_at, e.locked_by, e.locked_until, e.processed_at, e.outcome;

-- name: event_claim_one_ordered
-- ... and not while an earlier event of its aggregate is pending.
UPDATE events e
SET locked_by = $2, locked_until = now() + $3 * interval '1 second',
    attempts = e.attempts + 1, next_attempt_at = NULL
WHERE e.id = $1 AND NOT e.processed AND e.routed_at IS NULL
  AND (e.locked_until IS NULL OR e.locked_until < now())
  AND (e.aggregate_id IS NULL OR NOT EXISTS (
        SELECT 1 FROM events p
        WHERE p.aggregate_id = e.aggregate_id AND NOT p.processed AND p.routed_at IS NULL
          AND (p.created_at, p.id) < (e.created_at, e.id)))
RETURNING e.id, e.event_type, e.aggregate_id, e.aggregate_type, e.payload::text,
          e.metadata::text, e.processed, e.version, e.created_at, e.created_by, e.priority,
          e.attempts, e.next_attempt_at, e.locked_by, e.locked_until, e.processed_at, e.outcome,
          ARRAY(SELECT DISTINCT d.handler FROM event_deliveries d
                     WHERE d.aggregate_id = e.aggregate_id AND d.status = 'pending'
                       AND d.locked_by IS DISTINCT FROM $2::text
                       AND (d.event_created_at, d.event_id) < (e.created_at, e.id));

-- name: event_claim_one_ordered_blocking
-- ... nor behind a dead-lettered one (AGGREGATE_FAILURE=block).
UPDATE events e
SET locked_by = $2, locked_until = now() + $3 * interval '1 second',
    attempts = e.attempts + 1, next_attempt_at = NULL
WHERE e.id = $1 AND NOT e.processed AND e.routed_at IS NULL
  AND (e.locked_until IS NULL OR e.locked_until < now())
  AND (e.aggregate_id IS NULL OR (
        NOT EXISTS (
            SELECT 1 FROM events p
            WHERE p.aggregate_id = e.aggregate_id AND NOT p.processed AND p.routed_at IS NULL
              AND (p.created_at, p.id) < (e.created_at, e.id))
        AND NOT EXISTS (
            SELECT 1 FROM events p
            WHERE p.aggregate_id = e.aggregate_id AND p.outcome = 'dead_lettered'
              AND p.routed_at IS NULL
              AND (p.created_at, p.id) < (e.created_at, e.id))))
RETURNING e.id, e.event_type, e.aggregate_id, e.aggregate_type, e.payload::text,
          e.metadata::text, e.processed, e.version, e.created_at, e.created_by, e.priority,
          e.attempts, e.next_attempt_at, e.locked_by, e.locked_until, e.processed_at, e.outcome,
          ARRAY(SELECT DISTINCT d.handler FROM event_deliveries d
                     WHERE d.aggregate_id = e.aggregate_id
                       AND d.locked_by IS DISTINCT FROM $2::text
                       AND (d.status = 'pending' OR d.outcome = 'dead_lettered')
                       AND (d.event_created_at, d.event_id) < (e.created_at, e.id));

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
-- For each head $1: the first $2 events of its aggregate still on their own
-- rows that are pending (or, with $3, dead-lettered), in order, with whether
-- each is processed and ready (due, not leased). Routed events are passed
-- over, as the claim's gate passes them: their deliveries gate them per
-- handler. Two ordered seeks merged (events_aggregate_unrouted_idx; the dead
-- ones only with $3), so that a generic plan too reads $2 rows per
-- aggregate, not every pending one (an OR of the two bitmap-scans them all).
SELECT h.id, r.id, r.processed, r.ready
FROM events h
CROSS JOIN LATERAL (
    SELECT u.id, u.processed, u.created_at,
           ((u.next_attempt_at IS NULL OR u.next_attempt_at <= now())
            AND (u.locked_until IS NULL OR u.locked_until < now())) AS ready
    FROM ((SELECT e.id, e.processed, e.created_at, e.next_attempt_at, e.locked_until
           FROM events e
           WHERE e.aggregate_id = h.aggregate_id AND NOT e.processed AND e.routed_at IS NULL
           ORDER BY e.created_at, e.id
           LIMIT $2)
          UNION ALL
          (SELECT e.id, e.processed, e.created_at, e.next_attempt_at, e.locked_until
           FROM events e
           WHERE $3::bool AND e.aggregate_id = h.aggregate_id AND e.outcome = 'dead_lettered'
             AND e.routed_at IS NULL
           ORDER BY e.created_at, e.id
           LIMIT $2)) u
    ORDER BY u.created_at, u.id
    LIMIT $2) r
WHERE h.id = ANY($1::uuid[])
ORDER BY h.id, r.created_at, r.id;

-- name: event_lock_available
-- Which of $1 are available and not locked by anyone else right now (the
-- rows are locked for this transaction).
SELECT id FROM events
WHERE id = ANY($1::uuid[]) AND NOT processed AND routed_at IS NULL
  AND (next_attempt_at IS NULL OR next_attempt_at <= now())
  AND (locked_until IS NULL OR locked_until < now())
FOR UPDATE SKIP LOCKED;

-- name: event_claim_followers
-- Lease the events $1 (locked by this transaction) to token $2 for $3 seconds;
-- each with the handlers whose earlier deliveries in its aggregate are
-- pending (or, with $4, dead-lettered) and not held by this same claim
-- (whose runs handle them first): those must not run it yet.
UPDATE events e
SET locked_by = $2, locked_until = now() + $3 * interval '1 second',
    attempts = e.attempts + 1
WHERE e.id = ANY($1::uuid[]) AND NOT e.processed AND e.routed_at IS NULL
  AND (e.next_attempt_at IS NULL OR e.next_attempt_at <= now())
  AND (e.locked_until IS NULL OR e.locked_until < now())
RETURNING e.id, e.event_type, e.aggregate_id, e.aggregate_type, e.payload::text,
          e.metadata::text, e.processed, e.version, e.created_at, e.created_by, e.priority,
          e.attempts, e.next_attempt_at, e.locked_by, e.locked_until, e.processed_at, e.outcome,
          ARRAY(SELECT DISTINCT d.handler FROM event_deliveries d
                     WHERE d.aggregate_id = e.aggregate_id
                       AND d.locked_by IS DISTINCT FROM $2::text
                       AND (d.status = 'pending' OR ($4::bool AND d.outcome = 'dead_lettered'))
                       AND (d.event_created_at, d.event_id) < (e.created_at, e.id));

-- name: dead_letter_discard
-- Delete the dead letters $1; their events (and deliveries), if still
-- dead-lettered, are marked discarded (no longer holding back an aggregate,
-- still replayable).
WITH gone AS (
    DELETE FROM event_dead_letters WHERE id = ANY($1::uuid[]) RETURNING event_id, handler
), unblocked AS (
    UPDATE event_deliveries d SET outcome = 'discarded'
    FROM gone g
    WHERE d.event_id = g.event_id AND d.handler = g.handler AND d.outcome = 'dead_lettered'
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

-- Deliveries: the work of one subscription on one event, in event_deliveries.
-- A delivery claim returns the event's columns with the delivery's attempts,
-- next_attempt_at, locked_by and locked_until in their places, then the
-- handler (the 18th column).

-- name: delivery_open
-- Move events onto deliveries: $1 event ids, $2 their claim tokens (the
-- event's lease is the fence, and is cleared), $3 handlers, $4 run now (the
-- delivery is leased with the event's token for $6 seconds and its attempt
-- counted) or wait for its turn, $5 attempts spent on the event's row before
-- this one (a retrying or expired event keeps its count), $7 give this
-- claim's attempt on the row back (at a claim: each delivery counts its own;
-- not when a subscription that failed on the row moves onto its delivery).
-- Returns the leased deliveries.
WITH plan AS (
    SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::bool[], $5::int[],
                         $7::bool[])
           AS p(id, token, handler, leased, spent, give_back)
), moved AS (
    UPDATE events e
    SET routed_at = clock_timestamp(), locked_by = NULL, locked_until = NULL,
        next_attempt_at = '9999-12-31', deliveries_open = coalesce(e.deliveries_open, 0) + n.count,
        attempts = e.attempts - n.given_back
    FROM (SELECT id, token, count(*)::int AS count,
                 CASE WHEN bool_or(give_back) THEN 1 ELSE 0 END AS given_back
          FROM plan GROUP BY id, token) n
    WHERE e.id = n.id AND e.locked_by = n.token AND NOT e.processed
    RETURNING e.id, e.event_type, e.aggregate_id, e.aggregate_type, e.payload, e.metadata,
              e.processed, e.version, e.created_at, e.created_by, e.priority,
              e.processed_at, e.outcome, n.token
), opened AS (
    INSERT INTO event_deliveries (event_id, handler, event_type, aggregate_id,
                                  event_created_at, priority, attempts, locked_by, locked_until)
    SELECT m.id, p.handler, m.event_type, m.aggregate_id, coalesce(m.created_at, now()),
           m.priority, p.spent + CASE WHEN p.leased THEN 1 ELSE 0 END,
           CASE WHEN p.leased THEN p.token END,
           CASE WHEN p.leased THEN now() + $6 * interval '1 second' END
    FROM moved m JOIN plan p ON p.id = m.id AND p.token = m.token
    ON CONFLICT (event_id, handler) DO NOTHING
    RETURNING event_id, handler, attempts, locked_by, locked_until
)
SELECT m.id, m.event_type, m.aggregate_id, m.aggregate_type, m.payload::text,
       m.metadata::text, m.processed, m.version, m.created_at, m.created_by, m.priority,
       o.attempts, NULL::timestamptz, o.locked_by, o.locked_until, m.processed_at, m.outcome,
       o.handler
FROM opened o JOIN moved m ON m.id = o.event_id
WHERE o.locked_by IS NOT NULL;

-- name: delivery_claim
-- Claims of deliveries: $1 token, $2 lease seconds, $3 limit, $4 window, as
-- the event claims. No delivery claim (nor the followers') takes a
-- subscription paused through the admin API (handler_pauses): its
-- deliveries wait, pending, until it is resumed, in every worker at once.
-- The test is a hashed subplan over that small table, read once per
-- statement (measured: the same time as without it, nothing paused).
WITH picked AS (
    SELECT d.ctid FROM event_deliveries d
    WHERE d.status = 'pending'
      AND (d.next_attempt_at IS NULL OR d.next_attempt_at <= now())
      AND (d.locked_until IS NULL OR d.locked_until < now())
      AND d.handler NOT IN (SELECT handler FROM handler_pauses)
      AND $4::int > 0
    ORDER BY d.priority DESC, d.event_created_at, d.event_id
    LIMIT $3
    FOR UPDATE OF d SKIP LOCKED
), leased AS (
    UPDATE event_deliveries d
    SET locked_by = $1, locked_until = now() + $2 * interval '1 second',
        attempts = d.attempts + 1
    WHERE d.ctid = ANY(ARRAY(SELECT ctid FROM picked))
    RETURNING d.event_id, d.handler, d.attempts, d.next_attempt_at, d.locked_by, d.locked_until
)
SELECT e.id, e.event_type, e.aggregate_id, e.aggregate_type, e.payload::text,
       e.metadata::text, e.processed, e.version, e.created_at, e.created_by, e.priority,
       l.attempts, l.next_attempt_at, l.locked_by, l.locked_until, e.processed_at, e.outcome,
       l.handler
FROM leased l JOIN events e ON e.id = l.event_id;

-- name: delivery_claim_ordered
-- The gate, per (handler, aggregate): no earlier delivery of the same
-- handler in the aggregate is pending, and no earlier event of the
-- aggregate is still unrouted (it may be this handler's too).
WITH picked AS (
    SELECT d.ctid FROM event_deliveries d
    WHERE (d.event_id, d.handler) IN (
            SELECT w.event_id, w.handler FROM event_deliveries w
            WHERE w.status = 'pending'
              AND (w.next_attempt_at IS NULL OR w.next_attempt_at <= now())
              AND (w.locked_until IS NULL OR w.locked_until < now())
              AND w.handler NOT IN (SELECT handler FROM handler_pauses)
            ORDER BY w.priority DESC, w.event_created_at, w.event_id
            LIMIT $4)
      AND d.status = 'pending'
      AND (d.next_attempt_at IS NULL OR d.next_attempt_at <= now())
      AND (d.locked_until IS NULL OR d.locked_until < now())
      AND (d.aggregate_id IS NULL OR (
            NOT EXISTS (
                SELECT 1 FROM event_deliveries q
                WHERE q.aggregate_id = d.aggregate_id AND q.handler = d.handler
                  AND q.status = 'pending'
                  AND (q.event_created_at, q.event_id) < (d.event_created_at, d.event_id))
            AND NOT EXISTS (
                SELECT 1 FROM events p
                WHERE p.aggregate_id = d.aggregate_id AND NOT p.processed
                  AND p.routed_at IS NULL
                  AND (p.created_at, p.id) < (d.event_created_at, d.event_id))))
    ORDER BY d.priority DESC, d.event_created_at, d.event_id
    LIMIT $3
    FOR UPDATE OF d SKIP LOCKED
), leased AS (
    UPDATE event_deliveries d
    SET locked_by = $1, locked_until = now() + $2 * interval '1 second',
        attempts = d.attempts + 1
    WHERE d.ctid = ANY(ARRAY(SELECT ctid FROM picked))
    RETURNING d.event_id, d.handler, d.attempts, d.next_attempt_at, d.locked_by, d.locked_until
)
SELECT e.id, e.event_type, e.aggregate_id, e.aggregate_type, e.payload::text,
       e.metadata::text, e.processed, e.version, e.created_at, e.created_by, e.priority,
       l.attempts, l.next_attempt_at, l.locked_by, l.locked_until, e.processed_at, e.outcome,
       l.handler
FROM leased l JOIN events e ON e.id = l.event_id;

-- name: delivery_claim_ordered_blocking
-- AGGREGATE_FAILURE=block: an earlier dead-lettered delivery of the same
-- handler (or an earlier event dead-lettered on its own row) holds back too.
WITH picked AS (
    SELECT d.ctid FROM event_deliveries d
    WHERE (d.event_id, d.handler) IN (
            SELECT w.event_id, w.handler FROM event_deliveries w
            WHERE w.status = 'pending'
              AND (w.next_attempt_at IS NULL OR w.next_attempt_at <= now())
              AND (w.locked_until IS NULL OR w.locked_until < now())
              AND w.handler NOT IN (SELECT handler FROM handler_pauses)
            ORDER BY w.priority DESC, w.event_created_at, w.event_id
            LIMIT $4)
      AND d.status = 'pending'
      AND (d.next_attempt_at IS NULL OR d.next_attempt_at <= now())
      AND (d.locked_until IS NULL OR d.locked_until < now())
      AND (d.aggregate_id IS NULL OR (
            NOT EXISTS (
                SELECT 1 FROM event_deliveries q
                WHERE q.aggregate_id = d.aggregate_id AND q.handler = d.handler
                  AND (q.status = 'pending' OR q.outcome = 'dead_lettered')
                  AND (q.event_created_at, q.event_id) < (d.event_created_at, d.event_id))
            AND NOT EXISTS (
                SELECT 1 FROM events p
                WHERE p.aggregate_id = d.aggregate_id AND NOT p.processed
                  AND p.routed_at IS NULL
                  AND (p.created_at, p.id) < (d.event_created_at, d.event_id))
            AND NOT EXISTS (
                SELECT 1 FROM events p
                WHERE p.aggregate_id = d.aggregate_id AND p.outcome = 'dead_lettered'
                  AND p.routed_at IS NULL
                  AND (p.created_at, p.id) < (d.event_created_at, d.event_id))))
    ORDER BY d.priority DESC, d.event_created_at, d.event_id
    LIMIT $3
    FOR UPDATE OF d SKIP LOCKED
), leased AS (
    UPDATE event_deliveries d
    SET locked_by = $1, locked_until = now() + $2 * interval '1 second',
        attempts = d.attempts + 1
    WHERE d.ctid = ANY(ARRAY(SELECT ctid FROM picked))
    RETURNING d.event_id, d.handler, d.attempts, d.next_attempt_at, d.locked_by, d.locked_until
)
SELECT e.id, e.event_type, e.aggregate_id, e.aggregate_type, e.payload::text,
       e.metadata::text, e.processed, e.version, e.created_at, e.created_by, e.priority,
       l.attempts, l.next_attempt_at, l.locked_by, l.locked_until, e.processed_at, e.outcome,
       l.handler
FROM leased l JOIN events e ON e.id = l.event_id;

-- name: delivery_write_back
-- The results of deliveries, fenced on (event, handler, token): $1 event
-- ids, $2 handlers, $3 tokens, $4 kinds (succeeded, retry, rescheduled,
-- dead_lettered), $5 delay seconds, $6 errors, $7 attempts (the attempt that
-- ended), $8 tracebacks, $9 fingerprints, $10 worker; $11 in order
-- (ORDERING=aggregate): a success is not written while an earlier delivery of
-- its handler in the aggregate is pending, or an earlier event of the
-- aggregate is unrouted and pending, unless this same batch writes that one
-- too ($12 ids / $13 tokens: the batch's successes on events' own rows).
-- Then each event: deliveries_open counts down (the row lock orders two
-- workers finishing the last two deliveries: the second sees the first's
-- count), its outcome so far is kept (succeeded, dead_lettered, or partial
-- once they differ), the last failure goes into metadata as on the seed's
-- rows, its attempts are the most any of its deliveries took, and it is
-- processed when none is left open. Dead letters name
-- their handler. As in event_write_back, the in-order exemptions read the
-- batch's own successes fresh, every one locked before the first is written
-- (held, held_rows): a claim taking one over while this statement's snapshot
-- predates it must not let a later one complete ahead of its new handling.
-- Returns the id of each delivery written.
WITH r AS (
    SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::float8[],
                         $6::text[], $7::int[], $8::text[], $9::text[])
           AS r(id, handler, token, kind, delay, error, attempt, detail, fingerprint)
), held AS MATERIALIZED (
    SELECT d.event_id, d.handler FROM event_deliveries d
    JOIN r ON d.event_id = r.id AND d.handler = r.handler AND d.locked_by = r.token
    WHERE $11::bool AND r.kind = 'succeeded' AND d.aggregate_id IS NOT NULL
    ORDER BY d.event_id, d.handler
    FOR UPDATE OF d
), held_rows AS MATERIALIZED (
    SELECT e.id FROM events e
    JOIN unnest($12::uuid[], $13::text[]) AS h(id, token) ON e.id = h.id AND e.locked_by = h.token
    WHERE $11::bool AND e.aggregate_id IS NOT NULL
    ORDER BY e.id
    FOR UPDATE OF e
), written AS (
    UPDATE event_deliveries d
    SET locked_by = NULL, locked_until = NULL,
        status = CASE WHEN r.kind IN ('succeeded', 'dead_lettered') THEN 'done'
                      ELSE 'pending' END,
        outcome = CASE WHEN r.kind IN ('succeeded', 'dead_lettered') THEN r.kind END,
        finished_at = CASE WHEN r.kind IN ('succeeded', 'dead_lettered') THEN now() END,
        next_attempt_at = CASE WHEN r.kind IN ('retry', 'rescheduled')
                               THEN now() + r.delay * interval '1 second' END,
        attempts = CASE WHEN r.kind = 'rescheduled' THEN d.attempts - 1 ELSE d.attempts END,
        last_error = CASE WHEN r.kind IN ('retry', 'dead_lettered') THEN left(r.error, 2000)
                          ELSE d.last_error END
    FROM r
    WHERE d.event_id = r.id AND d.handler = r.handler AND d.locked_by = r.token
      AND d.status = 'pending'
      AND (SELECT count(*) FROM held) + (SELECT count(*) FROM held_rows) >= 0
      AND (NOT $11::bool OR r.kind <> 'succeeded' OR d.aggregate_id IS NULL OR (
            NOT EXISTS (
                SELECT 1 FROM event_deliveries q
                WHERE q.aggregate_id = d.aggregate_id AND q.handler = d.handler
                  AND q.status = 'pending'
                  AND (q.event_created_at, q.event_id) < (d.event_created_at, d.event_id)
                  AND NOT EXISTS (
                      SELECT 1 FROM held f WHERE f.event_id = q.event_id AND f.handler = q.handler))
            AND NOT EXISTS (
                SELECT 1 FROM events p
                WHERE p.aggregate_id = d.aggregate_id AND NOT p.processed
                  AND p.routed_at IS NULL
                  AND (p.created_at, p.id) < (d.event_created_at, d.event_id)
                  AND NOT EXISTS (SELECT 1 FROM held_rows f WHERE f.id = p.id))))
    RETURNING d.event_id, d.handler, r.kind, r.error, r.attempt, r.detail, r.fingerprint,
              d.attempts AS spent
), tally AS (
    SELECT event_id, max(spent) AS spent,
           count(*) FILTER (WHERE kind IN ('succeeded', 'dead_lettered'))::int AS finished,
           CASE WHEN bool_or(kind = 'succeeded') AND bool_or(kind = 'dead_lettered')
                THEN 'partial'
                WHEN bool_or(kind = 'dead_lettered') THEN 'dead_lettered'
                WHEN bool_or(kind = 'succeeded') THEN 'succeeded' END AS outcome,
           (array_agg(jsonb_build_object('retry_count', attempt,
                                         'last_error', left(error, 2000),
                                         'last_error_handler', handler,
                                         'last_error_at', now()))
              FILTER (WHERE kind IN ('retry', 'dead_lettered')))[1] AS failure,
           bool_or(kind = 'dead_lettered') AS dead
    FROM written GROUP BY event_id
), closed AS (
    UPDATE events e
    SET deliveries_open = greatest(e.deliveries_open - t.finished, 0),
        attempts = greatest(e.attempts, t.spent),
        processed = e.deliveries_open - t.finished <= 0,
        processed_at = CASE WHEN e.deliveries_open - t.finished <= 0 THEN now() END,
        outcome = CASE WHEN t.outcome IS NULL THEN e.outcome
                       WHEN e.outcome IS NULL OR e.outcome = t.outcome THEN t.outcome
                       ELSE 'partial' END,
        metadata = coalesce(e.metadata, '{}'::jsonb)
                   || coalesce(t.failure, '{}'::jsonb)
                   || CASE WHEN t.dead THEN '{"dead_lettered": true}'::jsonb
                           ELSE '{}'::jsonb END
                   || CASE WHEN e.deliveries_open - t.finished <= 0
                           THEN jsonb_build_object('processed_at', now(),
                                                   'processed_by', $10::text)
                           ELSE '{}'::jsonb END
    FROM tally t WHERE e.id = t.event_id
    RETURNING e.id, e.event_type, e.payload, e.created_at
), letters AS (
    INSERT INTO event_dead_letters (id, event_id, event_type, payload, error_message,
                                    retry_count, original_created_at, created_at,
                                    error_detail, handler, error_fingerprint)
    SELECT gen_random_uuid(), w.event_id, c.event_type, c.payload, w.error, w.attempt,
           coalesce(c.created_at, now()), now(), w.detail, w.handler, w.fingerprint
    FROM written w JOIN closed c ON c.id = w.event_id
    WHERE w.kind = 'dead_lettered'
    RETURNING event_id
)
SELECT event_id, handler FROM written;

-- name: delivery_hold
-- A transactional handler's first statement on a delivery ($1 event, $2
-- handler, $3 token): take its row lock if the lease is still ours.
UPDATE event_deliveries SET locked_until = locked_until
WHERE event_id = $1 AND handler = $2 AND locked_by = $3
RETURNING event_id;

-- name: delivery_release
-- Give delivery leases back unfinished ($1 event ids, $2 handlers, $3
-- tokens): the attempt is not spent.
UPDATE event_deliveries d
SET locked_by = NULL, locked_until = NULL, attempts = d.attempts - 1
FROM unnest($1::uuid[], $2::text[], $3::text[]) AS l(id, handler, token)
WHERE d.event_id = l.id AND d.handler = l.handler AND d.locked_by = l.token
RETURNING d.event_id;

-- name: delivery_renew
-- Extend the delivery leases $1 / $2 / $3 by $4 seconds from now.
UPDATE event_deliveries d
SET locked_until = now() + $4 * interval '1 second'
FROM unnest($1::uuid[], $2::text[], $3::text[]) AS l(id, handler, token)
WHERE d.event_id = l.id AND d.handler = l.handler AND d.locked_by = l.token
RETURNING d.event_id, d.handler;

-- name: delivery_replay
-- Run one subscription of event $1 again ($2 the handler), with a fresh
-- budget, leaving the others alone: its delivery is reopened (or created,
-- for an event handled on its own row), its open dead letters closed, and
-- the event pending again, its outcome so far that of its other finished
-- deliveries. routed_at is set anew, which tells the replay trigger that
-- this is not a replay of the whole event. Only for an event already routed
-- or processed (one still on its own row is handled as it is).
WITH reopened AS (
    INSERT INTO event_deliveries AS d (event_id, handler, event_type, aggregate_id,
                                       event_created_at, priority)
    SELECT e.id, $2, e.event_type, e.aggregate_id, coalesce(e.created_at, now()), e.priority
    FROM events e
    WHERE e.id = $1 AND (e.processed OR e.routed_at IS NOT NULL)
    ON CONFLICT (event_id, handler) DO UPDATE
    SET status = 'pending', outcome = NULL, attempts = 0, next_attempt_at = NULL,
        locked_by = NULL, locked_until = NULL, finished_at = NULL, last_error = NULL
    WHERE d.status = 'done'
    RETURNING event_id
), letters AS (
    UPDATE event_dead_letters SET replayed_at = now()
    WHERE event_id = $1 AND handler = $2 AND replayed_at IS NULL
      AND EXISTS (SELECT 1 FROM reopened)
)
UPDATE events e
SET processed = false, processed_at = NULL, routed_at = clock_timestamp(),
    next_attempt_at = '9999-12-31', deliveries_open = coalesce(e.deliveries_open, 0) + 1,
    outcome = (SELECT CASE WHEN count(DISTINCT o.outcome) > 1 THEN 'partial'
                           ELSE min(o.outcome) END
               FROM event_deliveries o
               WHERE o.event_id = $1 AND o.handler <> $2 AND o.status = 'done'),
    metadata = coalesce(e.metadata, '{}'::jsonb)
               || jsonb_build_object('replayed', true, 'replayed_at', now(),
                                     'replayed_handler', $2::text)
WHERE e.id = $1 AND EXISTS (SELECT 1 FROM reopened)
RETURNING e.id;

-- name: delivery_add
-- A backfill: give each of the events $1 a delivery for handler $2, where
-- it has none, and make those events pending again (routed_at set anew, so
-- the replay trigger leaves their other deliveries and outcome alone).
-- Events still pending on their own row are left out: they are routed when
-- claimed, the new subscription with them. Returns the events given one.
WITH added AS (
    INSERT INTO event_deliveries (event_id, handler, event_type, aggregate_id,
                                  event_created_at, priority)
    SELECT e.id, $2, e.event_type, e.aggregate_id, coalesce(e.created_at, now()), e.priority
    FROM events e
    WHERE e.id = ANY($1::uuid[]) AND (e.processed OR e.routed_at IS NOT NULL)
    ON CONFLICT (event_id, handler) DO NOTHING
    RETURNING event_id
)
UPDATE events e
SET processed = false, processed_at = NULL, routed_at = clock_timestamp(),
    next_attempt_at = '9999-12-31', deliveries_open = coalesce(e.deliveries_open, 0) + 1
FROM added a WHERE e.id = a.event_id
RETURNING e.id;

-- name: delivery_claim_followers
-- ORDERING=aggregate: the deliveries right behind each claimed head ($1 event
-- ids, $2 handlers) of the same handler and aggregate, up to $3 per head,
-- leased to token $4 for $5 seconds: a run, handled in order, as the event
-- claims' followers are. A run is contiguous: it stops at the first one that
-- is not ready (a retry not due, a lease held), and before any earlier event
-- of the aggregate still unrouted. Nobody else can claim them meanwhile: the
-- head we hold gates them.
WITH heads AS (
    SELECT d.event_id, d.handler, d.aggregate_id, d.event_created_at
    FROM unnest($1::uuid[], $2::text[]) AS h(id, handler)
    JOIN event_deliveries d ON d.event_id = h.id AND d.handler = h.handler
    WHERE d.aggregate_id IS NOT NULL
      AND d.handler NOT IN (SELECT handler FROM handler_pauses)
), behind AS (
    SELECT q.event_id, q.handler,
           count(*) FILTER (WHERE NOT q.ready) OVER (
               PARTITION BY h.event_id, h.handler
               ORDER BY q.event_created_at, q.event_id) AS stops
    FROM heads h
    CROSS JOIN LATERAL (
        SELECT q.event_id, q.handler, q.event_created_at,
               ((q.next_attempt_at IS NULL OR q.next_attempt_at <= now())
                AND (q.locked_until IS NULL OR q.locked_until < now())) AS ready
        FROM event_deliveries q
        WHERE q.aggregate_id = h.aggregate_id AND q.handler = h.handler
          AND q.status = 'pending'
          AND (q.event_created_at, q.event_id) > (h.event_created_at, h.event_id)
          AND NOT EXISTS (
              SELECT 1 FROM events p
              WHERE p.aggregate_id = h.aggregate_id AND NOT p.processed
                AND p.routed_at IS NULL
                AND (p.created_at, p.id) < (q.event_created_at, q.event_id))
        ORDER BY q.event_created_at, q.event_id
        LIMIT $3) q
), leased AS (
    UPDATE event_deliveries d
    SET locked_by = $4, locked_until = now() + $5 * interval '1 second',
        attempts = d.attempts + 1
    FROM behind b
    WHERE d.event_id = b.event_id AND d.handler = b.handler AND b.stops = 0
    RETURNING d.event_id, d.handler, d.attempts, d.next_attempt_at, d.locked_by, d.locked_until
)
SELECT e.id, e.event_type, e.aggregate_id, e.aggregate_type, e.payload::text,
       e.metadata::text, e.processed, e.version, e.created_at, e.created_by, e.priority,
       l.attempts, l.next_attempt_at, l.locked_by, l.locked_until, e.processed_at, e.outcome,
       l.handler
FROM leased l JOIN events e ON e.id = l.event_id;

-- name: delivery_revoke_stale_runs
-- Take back the rest of the runs behind delivery heads just taken over ($1
-- their aggregates, $2 their handlers): the stalled worker's later
-- deliveries of that handler and aggregate (leased with its expired lease,
-- not $3) must not run, or be written, ahead of the head's new handling.
-- Rows locked right now are never waited for.
UPDATE event_deliveries SET locked_by = NULL, locked_until = NULL
WHERE (event_id, handler) IN (
    SELECT d.event_id, d.handler FROM event_deliveries d
    JOIN unnest($1::uuid[], $2::text[]) AS h(aggregate_id, handler)
      ON d.aggregate_id = h.aggregate_id AND d.handler = h.handler
    WHERE d.status = 'pending' AND d.locked_by IS NOT NULL AND d.locked_by <> $3
    FOR UPDATE OF d SKIP LOCKED)
RETURNING event_id;

-- Admin reads
-- ==========================================================================
-- The admin API's (and /health's) fixed-shape reads, run by Driver.read on
-- a pooled connection in autocommit: one round trip each, nothing built or
-- compiled per request. The same names are in sqlite.sql. JSON columns are
-- cast to text (SQLite returns text), so that one mapping reads the rows of
-- both backends. An optional filter is `$n IS NULL OR ...`: each execution
-- is planned with its values (plan_cache_mode=force_custom_plan on the
-- pool, or an unnamed statement behind a transaction pooler), so a filter
-- not given folds away. A keyset bound is always given (the first page's
-- is past every row), so that it stays an index range.

-- name: admin_audit_page
-- The audit trail newest first, $5 entries before the keyset ($3 at, $4
-- id), of action $1 and actor $2 when given: admin_actions_at_idx.
SELECT id, at, actor, role, action, target::text, reason, counts::text, result, operation_id
FROM admin_actions
WHERE ($1::text IS NULL OR action = $1)
  AND ($2::text IS NULL OR actor = $2)
  AND (at, id) < ($3::timestamptz, $4::bigint)
ORDER BY at DESC, id DESC
LIMIT $5;

-- name: admin_operations_page
-- Bulk operations newest first, $5 of them before the keyset ($3
-- created_at, $4 id), of status $1 and action $2 when given:
-- admin_operations_created_idx. The columns of store.admin.Operation.
SELECT id, action, selector::text, max_items, rate_per_second, status, planned_count, total,
       done_count, changed_count, actor, role, reason, created_at, started_at, finished_at,
       updated_at, plan_expires_at, locked_by, locked_until, "cursor", error
FROM admin_operations
WHERE ($1::text IS NULL OR status = $1)
  AND ($2::text IS NULL OR action = $2)
  AND (created_at, id) < ($3::timestamptz, $4::uuid)
ORDER BY created_at DESC, id DESC
LIMIT $5;

-- name: admin_workers
-- The database's clock, and the workers seen in the last $1 seconds by id,
-- $3 of them after id $2 when given; one row of NULLs beside the clock
-- when there are none.
SELECT c.now, w.id, w.host, w.pid, w.version, w.started_at, w.last_claim_at, w.last_seen_at
FROM (SELECT now() AS now) AS c
LEFT JOIN eventproc_workers AS w
  ON w.last_seen_at >= c.now - $1::float8 * interval '1 second'
 AND ($2::text IS NULL OR w.id > $2)
ORDER BY w.id
LIMIT $3;

-- name: admin_paused
-- The paused subscriptions, with when, by whom and why.
SELECT handler, paused_at, actor, reason FROM handler_pauses;

-- name: admin_stats
-- /health's figures in one statement: the backlog (pending events), due
-- and leased work on events' rows, the oldest pending event's time; due and
-- leased deliveries; open dead letters; the database's clock.
SELECT e.backlog, e.due, e.in_flight, e.oldest, d.due, d.in_flight,
       (SELECT count(*) FROM event_dead_letters WHERE replayed_at IS NULL),
       now()
FROM (SELECT count(*) AS backlog,
             count(*) FILTER (WHERE routed_at IS NULL
                                AND (next_attempt_at IS NULL OR next_attempt_at <= now())
                                AND (locked_until IS NULL OR locked_until < now())) AS due,
             count(*) FILTER (WHERE routed_at IS NULL AND locked_until >= now()) AS in_flight,
             min(created_at) AS oldest
      FROM events WHERE processed = false) AS e,
     (SELECT count(*) FILTER (WHERE (next_attempt_at IS NULL OR next_attempt_at <= now())
                                AND (locked_until IS NULL OR locked_until < now())) AS due,
             count(*) FILTER (WHERE locked_until >= now()) AS in_flight
      FROM event_deliveries WHERE status = 'pending') AS d;

-- name: admin_blocked_heads
-- The heads of blocked aggregates (store.summaries), each row with the
-- database's clock (one row of NULLs beside it when there are none): $1 at
-- most of each kind, oldest first. An event on its own row (handler NULL):
-- the earliest retrying one of its aggregate, with later pending events
-- there; a delivery: the earliest retrying one of its (handler, aggregate),
-- with later pending deliveries of that handler there. Each with what waits
-- behind it: how many, how many would be due, since when. Retrying only
-- (AGGREGATE_FAILURE=park); admin_blocked_heads_blocking counts dead letters.
SELECT c.now, h.handler, h.event_id, h.event_type, h.aggregate_id, h.aggregate_type,
       h.created_at, h.next_attempt_at, h.retrying, h.waiting, h.waiting_due, h.waiting_since
FROM (SELECT now() AS now) AS c
LEFT JOIN (
    (SELECT NULL::text AS handler, r.id AS event_id, r.event_type, r.aggregate_id,
            r.aggregate_type, r.created_at, r.next_attempt_at, NOT r.processed AS retrying,
            (SELECT count(*) FROM events AS l
             WHERE l.aggregate_id = r.aggregate_id AND l.processed = false
               AND (l.created_at, l.id) > (r.created_at, r.id)) AS waiting,
            (SELECT count(*) FROM events AS l
             WHERE l.aggregate_id = r.aggregate_id AND l.processed = false
               AND (l.created_at, l.id) > (r.created_at, r.id)
               AND (l.next_attempt_at IS NULL OR l.next_attempt_at <= now())
               AND (l.locked_until IS NULL OR l.locked_until < now())) AS waiting_due,
            (SELECT min(l.created_at) FROM events AS l
             WHERE l.aggregate_id = r.aggregate_id AND l.processed = false
               AND (l.created_at, l.id) > (r.created_at, r.id)) AS waiting_since
     FROM (SELECT id, event_type, aggregate_id, aggregate_type, created_at, next_attempt_at,
                  processed,
                  row_number() OVER (PARTITION BY aggregate_id ORDER BY created_at, id) AS rank
           FROM events
           WHERE aggregate_id IS NOT NULL AND routed_at IS NULL
             AND processed = false AND next_attempt_at > now()) AS r
     WHERE r.rank = 1
       AND EXISTS (SELECT 1 FROM events AS l
                   WHERE l.aggregate_id = r.aggregate_id AND l.processed = false
                     AND (l.created_at, l.id) > (r.created_at, r.id))
     ORDER BY r.created_at, r.id
     LIMIT $1)
    UNION ALL
    (SELECT r.handler, r.event_id, r.event_type, r.aggregate_id, e.aggregate_type,
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
               AND (l.next_attempt_at IS NULL OR l.next_attempt_at <= now())
               AND (l.locked_until IS NULL OR l.locked_until < now())) AS waiting_due,
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
             AND status = 'pending' AND next_attempt_at > now()) AS r
     JOIN events AS e ON e.id = r.event_id
     WHERE r.rank = 1
       AND EXISTS (SELECT 1 FROM event_deliveries AS l
                   WHERE l.aggregate_id = r.aggregate_id AND l.handler = r.handler
                     AND l.status = 'pending'
                     AND (l.event_created_at, l.event_id) > (r.event_created_at, r.event_id))
     ORDER BY r.event_created_at, r.event_id, r.handler
     LIMIT $1)
) AS h ON true;

-- name: admin_blocked_heads_blocking
-- admin_blocked_heads with AGGREGATE_FAILURE=block: a dead-lettered event
-- (or delivery) heads a block too, and is no longer retrying.
SELECT c.now, h.handler, h.event_id, h.event_type, h.aggregate_id, h.aggregate_type,
       h.created_at, h.next_attempt_at, h.retrying, h.waiting, h.waiting_due, h.waiting_since
FROM (SELECT now() AS now) AS c
LEFT JOIN (
    (SELECT NULL::text AS handler, r.id AS event_id, r.event_type, r.aggregate_id,
            r.aggregate_type, r.created_at, r.next_attempt_at, NOT r.processed AS retrying,
            (SELECT count(*) FROM events AS l
             WHERE l.aggregate_id = r.aggregate_id AND l.processed = false
               AND (l.created_at, l.id) > (r.created_at, r.id)) AS waiting,
            (SELECT count(*) FROM events AS l
             WHERE l.aggregate_id = r.aggregate_id AND l.processed = false
               AND (l.created_at, l.id) > (r.created_at, r.id)
               AND (l.next_attempt_at IS NULL OR l.next_attempt_at <= now())
               AND (l.locked_until IS NULL OR l.locked_until < now())) AS waiting_due,
            (SELECT min(l.created_at) FROM events AS l
             WHERE l.aggregate_id = r.aggregate_id AND l.processed = false
               AND (l.created_at, l.id) > (r.created_at, r.id)) AS waiting_since
     FROM (SELECT id, event_type, aggregate_id, aggregate_type, created_at, next_attempt_at,
                  processed,
                  row_number() OVER (PARTITION BY aggregate_id ORDER BY created_at, id) AS rank
           FROM events
           WHERE aggregate_id IS NOT NULL AND routed_at IS NULL
             AND (processed = false AND next_attempt_at > now()
                  OR outcome = 'dead_lettered')) AS r
     WHERE r.rank = 1
       AND EXISTS (SELECT 1 FROM events AS l
                   WHERE l.aggregate_id = r.aggregate_id AND l.processed = false
                     AND (l.created_at, l.id) > (r.created_at, r.id))
     ORDER BY r.created_at, r.id
     LIMIT $1)
    UNION ALL
    (SELECT r.handler, r.event_id, r.event_type, r.aggregate_id, e.aggregate_type,
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
               AND (l.next_attempt_at IS NULL OR l.next_attempt_at <= now())
               AND (l.locked_until IS NULL OR l.locked_until < now())) AS waiting_due,
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
             AND (status = 'pending' AND next_attempt_at > now()
                  OR outcome = 'dead_lettered')) AS r
     JOIN events AS e ON e.id = r.event_id
     WHERE r.rank = 1
       AND EXISTS (SELECT 1 FROM event_deliveries AS l
                   WHERE l.aggregate_id = r.aggregate_id AND l.handler = r.handler
                     AND l.status = 'pending'
                     AND (l.event_created_at, l.event_id) > (r.event_created_at, r.event_id))
     ORDER BY r.event_created_at, r.event_id, r.handler
     LIMIT $1)
) AS h ON true;
