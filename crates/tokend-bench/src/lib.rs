//! The library side of `tokend-bench`: the attack suite (`tokend-bench
//! attack`), so its integration test can run it against an in-process
//! tokend. The load generator itself lives in `main.rs`.

pub mod attack;
