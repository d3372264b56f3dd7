//! Compiles the `.proto` files with a vendored `protoc`, so building needs no
//! system protobuf compiler.

fn main() {
    let protoc = protoc_bin_vendored::protoc_bin_path().expect("vendored protoc for this platform");
    // SAFETY: build scripts are single-threaded; connectrpc-build reads PROTOC.
    unsafe { std::env::set_var("PROTOC", protoc) };
    connectrpc_build::Config::new()
        .files(&[
            "proto/process/process.proto",
            "proto/filesystem/filesystem.proto",
            "proto/hostagent/v1/hostagent.proto",
        ])
        .includes(&["proto/"])
        .include_file("_connectrpc.rs")
        .compile()
        .expect("compile protos");
}
