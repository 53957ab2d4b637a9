//! Passes over the IR after shape inference: lowering to a kernel plan, and
//! the rewrites of that plan.

pub mod algorithm;
pub mod fuse;
pub mod live_rows;
pub mod lower;
pub mod precision;
pub mod schedule;
pub mod storage;
