//! Feed listeners: WebSocket clients of the upstream services that put
//! events on the queues (seed MDL + MDQ, FDL + FDQ).

pub mod massive;
