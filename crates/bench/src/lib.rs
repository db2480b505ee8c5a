//! What the benchmark (`rushes-bench`) and the load and crash suite (`rushes-load`) share:
//! driving real `rushes` processes and many devices over the API.

pub mod control;
pub mod procs;
pub mod sockets;
