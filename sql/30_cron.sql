-- Scheduled work, run by pg_cron inside this database. cron.schedule with a
-- job name replaces an existing job of that name, so this file is idempotent.

-- Expired idempotency keys, every 5 minutes, in bounded batches.
SELECT cron.schedule('pg_tenancy: purge idempotency keys', '*/5 * * * *',
                     'CALL tenancy.purge_idempotency_keys()');

-- Auto-grade matches for every active tenant, every 10 minutes, each tenant
-- in its own transaction with its own context (tenancy.for_each_tenant), as
-- tenancy_jobs: row level security applies (a superuser would bypass it).
-- Each tenant's run is given its id: on Citus it runs on the tenant's worker.
SELECT cron.schedule_in_database('pg_tenancy: apply reconciliation', '*/10 * * * *',
                                 $$CALL tenancy.for_each_tenant('ledger_routed.apply_reconciliation_for(uuid)')$$,
                                 current_database(), 'tenancy_jobs', true);

-- Audit log retention, daily at 03:17: monthly partitions created ahead and
-- dropped whole once older than tenancy.audit_retention, never a mass
-- DELETE. Runs as tenancy_maintenance, the only role allowed to.
SELECT cron.schedule_in_database('pg_tenancy: audit maintenance', '17 3 * * *',
                                 'SELECT tenancy.audit_maintain()',
                                 current_database(), 'tenancy_maintenance', true);
