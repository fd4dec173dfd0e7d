-- Wake listening processors: once per inserting statement (NOTIFY is also
-- de-duplicated per transaction), so a 10,000-row insert costs one notify.
CREATE OR REPLACE FUNCTION eventproc_notify_v1() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('eventproc_events', '');
    RETURN NULL;
END
$$;

-- A replay (processed set back to false, by eventproc or by the seed's raw
-- SQL) gets a fresh retry budget and wakes the processors.
CREATE OR REPLACE FUNCTION eventproc_replay_v1() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.attempts := 0;
    NEW.next_attempt_at := NULL;
    NEW.locked_by := NULL;
    NEW.locked_until := NULL;
    NEW.processed_at := NULL;
    NEW.outcome := NULL;
    PERFORM pg_notify('eventproc_events', '');
    RETURN NEW;
END
$$;

DROP TRIGGER IF EXISTS eventproc_notify_insert_v1 ON events;
CREATE TRIGGER eventproc_notify_insert_v1
    AFTER INSERT ON events
    FOR EACH STATEMENT EXECUTE FUNCTION eventproc_notify_v1();

-- The WHEN clause is checked without entering plpgsql, so ordinary updates
-- (claims, completions) pay nothing for this trigger.
DROP TRIGGER IF EXISTS eventproc_replay_v1 ON events;
CREATE TRIGGER eventproc_replay_v1
    BEFORE UPDATE OF processed ON events
    FOR EACH ROW
    WHEN (OLD.processed IS TRUE AND NEW.processed IS FALSE)
    EXECUTE FUNCTION eventproc_replay_v1();
