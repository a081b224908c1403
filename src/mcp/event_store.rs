//! placeholder until the Redis event store lands
