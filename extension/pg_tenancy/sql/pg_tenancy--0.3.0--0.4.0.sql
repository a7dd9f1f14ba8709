-- pg_tenancy 0.3.0 -> 0.4.0: tenancy.audit_maintain() no longer deadlocks.
--
-- Why: 0.3.0's audit_maintain took its locks one partition at a time as it
-- went: ACCESS EXCLUSIVE on the default partition to attach a month, then on
-- the parent to drop an old month. A transaction that had written an audit
-- entry (holding the parent) and then read the log (wanting the default
-- partition) deadlocked with it, and PostgreSQL cancelled one of the two: the
-- maintenance job, or worse, the application's transaction.
--
-- What changes: only this function, replaced in place (same signature, same
-- result). It now
--   * serializes maintainers with a lock on the parent alone that readers and
--     writers pass through;
--   * decides first whether there is anything to create or drop, and returns
--     at once when there is not (most days), taking no stronger lock;
--   * otherwise takes ACCESS EXCLUSIVE on the whole log up front, parent
--     before partitions as every reader and writer does, waiting at most
--     lock_timeout (1 s, a new SET clause) per try so audited writes never
--     queue behind it for long, and gives up with SQLSTATE 55P03 after 30
--     tries, having changed nothing.
-- No table, grant or data changes; no restart is needed for this step.

CREATE OR REPLACE FUNCTION tenancy.audit_maintain()
RETURNS TABLE (action text, partition_name text, entries bigint)
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
SET tenancy.audit_maintenance = on
SET lock_timeout = '1s'
AS $$
DECLARE
    first_day timestamptz;
    part text;
    moved bigint;
    cutoff timestamptz := now() - make_interval(days => current_setting('tenancy.audit_retention')::int);
    months timestamptz[];
    old_parts text[];
    attempt int := 0;
BEGIN
    -- One maintainer at a time. ONLY: the partitions are not locked, and this
    -- mode lets every reader and writer of the log through.
    LOOP
        BEGIN
            LOCK TABLE ONLY tenancy.audit_log IN SHARE UPDATE EXCLUSIVE MODE;
            EXIT;
        EXCEPTION WHEN lock_not_available THEN
            attempt := attempt + 1;
            IF attempt >= 30 THEN
                RAISE EXCEPTION 'tenancy.audit_maintain is already running in another session'
                    USING ERRCODE = 'lock_not_available', HINT = 'Nothing was changed. Run it again once the other call has finished.';
            END IF;
        END;
    END LOOP;

    -- What there is to do: months that have no partition yet (this one, the
    -- next two, and any month entries in the default partition belong to),
    -- and months that ended before the retention cutoff.
    SELECT coalesce(array_agg(m ORDER BY m), '{}') INTO months
    FROM (
        SELECT m FROM generate_series(date_trunc('month', now(), 'UTC'), date_trunc('month', now(), 'UTC') + interval '2 months',
                                      interval '1 month') m
        UNION
        SELECT DISTINCT date_trunc('month', d.at, 'UTC') FROM tenancy.audit_log_default d
    ) wanted
    WHERE to_regclass('tenancy.audit_log_p' || to_char(m AT TIME ZONE 'UTC', 'YYYY_MM')) IS NULL;
    SELECT coalesce(array_agg(c.relname::text ORDER BY c.relname), '{}') INTO old_parts
    FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
    WHERE i.inhparent = 'tenancy.audit_log'::regclass AND c.relname <> 'audit_log_default'
      AND (regexp_match(pg_get_expr(c.relpartbound, c.oid), 'TO \(''([^'']+)''\)'))[1]::timestamptz <= cutoff;
    IF months = '{}' AND old_parts = '{}' THEN
        RETURN;
    END IF;

    -- Attaching and dropping partitions needs the whole log to itself. Take
    -- that lock first, parent before partitions as every reader and writer
    -- does, rather than one partition at a time midway: that order could
    -- deadlock with a transaction that had written an entry and then read
    -- the log. Each attempt waits at most lock_timeout, so a long reader makes
    -- audited writes queue behind this job for a second at a time, not for as
    -- long as the reader runs.
    attempt := 0;
    LOOP
        BEGIN
            LOCK TABLE tenancy.audit_log IN ACCESS EXCLUSIVE MODE;
            EXIT;
        EXCEPTION WHEN lock_not_available THEN
            attempt := attempt + 1;
            IF attempt >= 30 THEN
                RAISE EXCEPTION 'tenancy.audit_log stayed in use: audit_maintain gave up after % tries', attempt
                    USING ERRCODE = 'lock_not_available',
                          HINT = 'Nothing was changed. Long transactions reading or writing audited tables hold the log; the next run tries again.';
            END IF;
            PERFORM pg_sleep(1);
        END;
    END LOOP;

    FOREACH first_day IN ARRAY months LOOP
        part := 'audit_log_p' || to_char(first_day AT TIME ZONE 'UTC', 'YYYY_MM');
        EXECUTE format('CREATE TABLE tenancy.%I (LIKE tenancy.audit_log INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', part);
        EXECUTE format('CREATE INDEX %I ON tenancy.%I (tenant_id, at)', part || '_tenant_at', part);
        EXECUTE format('WITH gone AS (DELETE FROM tenancy.audit_log_default d WHERE d.at >= $1 AND d.at < $2 RETURNING d.*)
                        INSERT INTO tenancy.%I SELECT * FROM gone', part)
        USING first_day, first_day + interval '1 month';
        GET DIAGNOSTICS moved = ROW_COUNT;
        EXECUTE format('ALTER TABLE tenancy.audit_log ATTACH PARTITION tenancy.%I FOR VALUES FROM (%L) TO (%L)',
                       part, first_day, first_day + interval '1 month');
        action := 'created'; partition_name := 'tenancy.' || part; entries := moved;
        RETURN NEXT;
        -- A month moved out of the default partition may itself be past
        -- retention: it is dropped below with the others.
        IF first_day + interval '1 month' <= cutoff THEN
            old_parts := old_parts || part;
        END IF;
    END LOOP;

    FOREACH part IN ARRAY old_parts LOOP
        EXECUTE format('SELECT count(*) FROM tenancy.%I', part) INTO moved;
        EXECUTE format('DROP TABLE tenancy.%I', part);
        action := 'dropped'; partition_name := 'tenancy.' || part; entries := moved;
        RETURN NEXT;
    END LOOP;
END
$$;
COMMENT ON FUNCTION tenancy.audit_maintain() IS 'Audit log partitions: creates this month''s and the next two (UTC), moves entries out of the default partition into their month, drops months that ended more than tenancy.audit_retention days ago. Returns what it did. Scheduled daily by pg_cron.';
