-- Scheduled work, run by pg_cron inside this database. cron.schedule with a
-- job name replaces an existing job of that name, so this file is idempotent.

-- Expired idempotency keys, every 5 minutes, in bounded batches.
SELECT cron.schedule('pg_tenancy: purge idempotency keys', '*/5 * * * *',
                     'CALL tenancy.purge_idempotency_keys()');

-- Auto-grade matches for every active tenant, every 10 minutes, each tenant
-- in its own transaction with its own context (tenancy.for_each_tenant), as
-- tenancy_jobs: row level security applies (a superuser would bypass it).
SELECT cron.schedule_in_database('pg_tenancy: apply reconciliation', '*/10 * * * *',
                                 $$CALL tenancy.for_each_tenant('ledger.apply_reconciliation()')$$,
                                 current_database(), 'tenancy_jobs', true);
