//! Moving tenants' shards between the workers of the cluster that
//! `scripts/test_citus` starts, and what the nodes need for it. A test
//! target of its own, run one test at a time after the others: a move takes
//! along every tenant of a shard group, and these tests change what the
//! nodes grant.

mod shard_moves;
