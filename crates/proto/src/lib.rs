//! Generated protobuf messages and Connect service stubs (envd's `process` and
//! `filesystem` packages). Nothing here is hand-written beyond the include.

connectrpc::include_generated!();
