-- v3: the delivery model. A replay of the whole event (processed set back to
-- false, by eventproc, the admin API or the seed's raw SQL) deletes its
-- deliveries and routes it again; a replay of one delivery (the store sets
-- routed_at anew in the same UPDATE) is not a replay of the event and is left
-- alone here. The event gets a fresh retry budget, closes the event's open dead
-- letters (they count as replayed, not as open failures), moves the last
-- failure out of the top-level metadata into metadata.previous_failures
-- (the newest 10 are kept), and wakes the processors.
CREATE OR REPLACE FUNCTION eventproc_replay_v3() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    history jsonb;
BEGIN
    NEW.attempts := 0;
    NEW.next_attempt_at := NULL;
    NEW.locked_by := NULL;
    NEW.locked_until := NULL;
    NEW.processed_at := NULL;
    NEW.outcome := NULL;
    NEW.routed_at := NULL;
    NEW.deliveries_open := NULL;
    IF jsonb_typeof(NEW.metadata) = 'object'
       AND NEW.metadata ?| ARRAY['retry_count', 'last_error', 'dead_lettered'] THEN
        history := NEW.metadata -> 'previous_failures';
        IF history IS NULL OR jsonb_typeof(history) <> 'array' THEN
            history := '[]'::jsonb;
        END IF;
        history := history || jsonb_build_array(jsonb_build_object(
            'outcome', OLD.outcome,
            'processed_at', OLD.processed_at,
            'retry_count', NEW.metadata -> 'retry_count',
            'last_error', NEW.metadata -> 'last_error',
            'last_error_at', NEW.metadata -> 'last_error_at',
            'dead_lettered', coalesce(NEW.metadata -> 'dead_lettered', 'false'::jsonb)));
        WHILE jsonb_array_length(history) > 10 LOOP
            history := history - 0;
        END LOOP;
        NEW.metadata := (NEW.metadata - ARRAY['retry_count', 'last_error', 'last_error_at',
                                               'dead_lettered'])
                        || jsonb_build_object('previous_failures', history);
    END IF;
    UPDATE event_dead_letters SET replayed_at = now()
    WHERE event_id = NEW.id AND replayed_at IS NULL;
    -- Every delivery runs again, routed afresh (a subscription added since
    -- takes the event too), with a fresh budget.
    DELETE FROM event_deliveries WHERE event_id = NEW.id;
    PERFORM pg_notify('eventproc_events', '');
    RETURN NEW;
END
$$;

-- The replaced service's publishers may insert processed = NULL: it means
-- "not processed" (setting it to NULL later is a replay, as false is).
CREATE OR REPLACE FUNCTION eventproc_null_processed_v1() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.processed := false;
    RETURN NEW;
END
$$;

DROP TRIGGER IF EXISTS eventproc_replay_v1 ON events;
DROP FUNCTION IF EXISTS eventproc_replay_v1();
DROP TRIGGER IF EXISTS eventproc_b_replay_v2 ON events;
DROP FUNCTION IF EXISTS eventproc_replay_v2();

-- Triggers of one kind fire in name order: "a_null" normalises NULL before
-- "b_replay" looks at the new value. Both WHEN clauses are checked without
-- entering plpgsql, so ordinary inserts, claims and completions pay nothing.
DROP TRIGGER IF EXISTS eventproc_a_null_processed_v1 ON events;
CREATE TRIGGER eventproc_a_null_processed_v1
    BEFORE INSERT OR UPDATE OF processed ON events
    FOR EACH ROW
    WHEN (NEW.processed IS NULL)
    EXECUTE FUNCTION eventproc_null_processed_v1();

DROP TRIGGER IF EXISTS eventproc_b_replay_v3 ON events;
CREATE TRIGGER eventproc_b_replay_v3
    BEFORE UPDATE OF processed ON events
    FOR EACH ROW
    WHEN (OLD.processed IS TRUE AND NEW.processed IS NOT TRUE
          AND NEW.routed_at IS NOT DISTINCT FROM OLD.routed_at)
    EXECUTE FUNCTION eventproc_replay_v3();
