pub mod config;
pub mod ids;
pub mod keys;
pub mod redis_pool;
pub mod sessions;
