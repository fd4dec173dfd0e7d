-- The same rules as postgres_triggers_v3.sql, in SQLite's spelling: a replay
-- of the whole event deletes its deliveries; one that sets routed_at anew
-- (a replay of one delivery, by the store) is left alone.

DROP TRIGGER IF EXISTS eventproc_replay_v1;
DROP TRIGGER IF EXISTS eventproc_replay_v2;

-- The replaced service's publishers may insert processed = NULL: it means
-- "not processed".
CREATE TRIGGER IF NOT EXISTS eventproc_null_processed_v1
AFTER INSERT ON events
FOR EACH ROW WHEN NEW.processed IS NULL
BEGIN
    UPDATE events SET processed = 0 WHERE id = NEW.id;
END;

-- A replay (processed set back to false or NULL, by eventproc, the admin API
-- or the seed's raw SQL) gets a fresh retry budget, closes the event's open
-- dead letters, and moves the last failure out of the top-level metadata
-- into metadata.previous_failures (the newest 10 are kept).
CREATE TRIGGER IF NOT EXISTS eventproc_replay_v3
AFTER UPDATE OF processed ON events
FOR EACH ROW WHEN OLD.processed = 1 AND NEW.processed IS NOT 1
    AND NEW.routed_at IS OLD.routed_at
BEGIN
    UPDATE events
    SET processed = 0, attempts = 0, next_attempt_at = NULL, locked_by = NULL,
        locked_until = NULL, processed_at = NULL, outcome = NULL, routed_at = NULL,
        deliveries_open = NULL,
        metadata = CASE
            WHEN json_valid(NEW.metadata) AND json_type(NEW.metadata) = 'object'
                 AND (json_type(NEW.metadata, '$.retry_count') IS NOT NULL
                      OR json_type(NEW.metadata, '$.last_error') IS NOT NULL
                      OR json_type(NEW.metadata, '$.dead_lettered') IS NOT NULL)
            THEN json_set(
                json_remove(NEW.metadata, '$.retry_count', '$.last_error', '$.last_error_at',
                            '$.dead_lettered'),
                '$.previous_failures',
                json_insert(
                    CASE
                        WHEN json_type(NEW.metadata, '$.previous_failures') IS NULL
                             OR json_type(NEW.metadata, '$.previous_failures') <> 'array'
                        THEN '[]'
                        WHEN json_array_length(NEW.metadata, '$.previous_failures') >= 10
                        THEN json_remove(json_extract(NEW.metadata, '$.previous_failures'), '$[0]')
                        ELSE json_extract(NEW.metadata, '$.previous_failures')
                    END,
                    '$[#]',
                    json_object(
                        'outcome', OLD.outcome,
                        'processed_at', OLD.processed_at,
                        'retry_count', json_extract(NEW.metadata, '$.retry_count'),
                        'last_error', json_extract(NEW.metadata, '$.last_error'),
                        'last_error_at', json_extract(NEW.metadata, '$.last_error_at'),
                        'dead_lettered', json(CASE
                            WHEN json_type(NEW.metadata, '$.dead_lettered') = 'true'
                            THEN 'true' ELSE 'false' END))))
            ELSE NEW.metadata
        END
    WHERE id = NEW.id;
    UPDATE event_dead_letters SET replayed_at = strftime('%Y-%m-%d %H:%M:%f', 'now')
    WHERE event_id = NEW.id AND replayed_at IS NULL;
    DELETE FROM event_deliveries WHERE event_id = NEW.id;
END;
