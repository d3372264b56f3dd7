//! Rebuild when the dashboard build (web/build, embedded by src/web.rs) changes. Before the UI
//! is built, watch web/ itself so the folder appearing triggers a rebuild too.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let build = std::path::Path::new("../../web/build");
    if build.is_dir() {
        println!("cargo:rerun-if-changed=../../web/build");
    } else {
        println!("cargo:rerun-if-changed=../../web");
    }
}
