-- The Citus deployment: loaded between sql/15_matches.sql and
-- sql/20_api.sql (the files of sql/ and sql/citus/ run in the order of their
-- numbers), on the coordinator, with Citus installed on every node, the
-- workers added and tenancy.context_key set on every node.
--
--   * tenancy's shared tables become reference tables, and the ledger is
--     sharded by tenant_id, colocated (idempotency keys stay on the
--     coordinator); the api views, created after this, are then
--     distributed too.
--   * ledger_routed.apply_reconciliation_for (sql/15_matches.sql), which the
--     scheduled job and POST /rpc/apply_reconciliation end in, and
--     ledger_routed.reconcile_for, which POST /rpc/reconcile ends in, run on
--     the worker that holds the tenant: distributed by their tenant
--     argument, colocated with the ledger, and delegated also inside
--     transactions (force_delegation).
--   * The roles requests and sessions switch to log in to the workers:
--     Citus opens worker connections as the current role. Only there (the
--     coordinator keeps them NOLOGIN); the workers' pg_hba.conf must let
--     them in from the coordinator only.
SELECT * FROM tenancy.scale_out();

SELECT run_command_on_workers($$SET citus.enable_ddl_propagation TO off; ALTER ROLE authenticated LOGIN$$);
SELECT run_command_on_workers($$SET citus.enable_ddl_propagation TO off; ALTER ROLE analyst LOGIN$$);
SELECT run_command_on_workers($$SET citus.enable_ddl_propagation TO off; ALTER ROLE ledger_owner LOGIN$$);

SELECT create_distributed_function('ledger_routed.apply_reconciliation_for(uuid)', '$1',
                                   colocate_with := 'ledger.invoices', force_delegation := true);
SELECT create_distributed_function('ledger_routed.reconcile_for(uuid, jsonb)', '$1',
                                   colocate_with := 'ledger.invoices', force_delegation := true);
